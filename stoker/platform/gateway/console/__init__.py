"""The web console: the platform at a glance in a browser, served by every gateway under /console.

    routes.py     the pages, their live parts, chart data, actions, sign-in (the route list)
    guard.py      every console route is built there: signed-in (a session cookie) unless public
    sessions.py   sign-in sessions in Redis (the only Redis keys the console owns)
    gather.py     what each page shows, from the ledger, registry, nodes, dead letters, triggers
    render.py     Jinja2 templates, display filters, the static files and security headers
    templates/    the pages and their live fragments (one template renders both)
    static/       the stylesheet, the script, and the chart library (uPlot, vendored with its license)

The console is not part of the management API: it has no bearer tokens and no OpenAPI
entries; its JSON is for its own pages. User guide: docs/console.md.
"""
