"""HTTP surface: thin routers over the domain packages."""
