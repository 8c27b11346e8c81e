"""The outside: metric families built at scrape time, the HTTP server (TLS, basic auth, the JSON
API and the landing page). The only package that knows prometheus_client and HTTP."""
