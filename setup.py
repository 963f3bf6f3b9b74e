"""Build and install sockd, the SOCKS 4/4a/5 server, and its clients."""

from setuptools import setup

from sockd import __version__

setup(
    name="sockd",
    version=__version__,
    description="A preforking SOCKS 4, 4a and 5 server in the tradition of CSTC SOCKS",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="BSD-2-Clause",
    python_requires=">=3.11",
    packages=["sockd", "clients", "clients.bootstrap", "clients.programs"],
    # python-pam: --pam (a ctypes binding to the system's libpam.so.0, Debian's libpam0g)
    install_requires=["python-daemon>=3.0", "setproctitle>=1.3", "python-pam>=2.0"],
    extras_require={"test": ["pytest>=7", "pytest-timeout>=2", "hypothesis>=6", "PySocks>=1.7",
                             "ruff", "pyftpdlib>=1.5"]},
    entry_points={
        "console_scripts": [
            "sockd = sockd.cli:main",
            "test_sockd_conf = sockd.testconf:main",
            "sockpasswd = sockd.sockpasswd:main",
            "socksify = clients.socksify:main",
            "test_socks_conf = clients.testconf:main",
            "rfinger = clients.programs.rfinger:main",
            "rwhois = clients.programs.rwhois:main",
            "rtelnet = clients.programs.rtelnet:main",
            "rftp = clients.programs.rftp:main",
        ],
    },
)
