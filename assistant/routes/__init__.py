"""The HTTP API's routes, one blueprint per area, each built by `blueprint(services)`:

- `questions`: POST /question and /question/stream;
- `feedback`: POST /feedback and GET /conversations/<id>;
- `monitoring`: /stats, /health, /health/live, /health/ready and /metrics.

`services.Services` is what the routes share (built once per process by `create_app`);
`requests` holds the body parsing and the one error format every 4xx uses.
"""
