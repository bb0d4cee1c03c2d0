"""The website: server-rendered pages (sign-in for now) and the website-token endpoint."""
