"""Run the app under uvicorn; on SIGINT/SIGTERM held long-polls answer at once, so the
server stops promptly instead of waiting out up to 25 s requests."""

import uvicorn


class _Server(uvicorn.Server):
    def __init__(self, config, hub):
        super().__init__(config)
        self.hub = hub

    def handle_exit(self, sig, frame):
        if self.hub.loop is not None:
            self.hub.loop.call_soon_threadsafe(self.hub.close)
        super().handle_exit(sig, frame)


def run(app, host, port, certfile=None, keyfile=None, log_level="info"):
    config = uvicorn.Config(app, host=host, port=port, ssl_certfile=certfile,
                            ssl_keyfile=keyfile, log_level=log_level,
                            timeout_graceful_shutdown=5,
                            # every idle exchange would carry them; the protocol needs neither
                            server_header=False, date_header=False)
    _Server(config, app.state.hub).run()
