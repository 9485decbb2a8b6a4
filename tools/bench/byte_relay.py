"""A counting TCP relay for the benches: it listens on a free loopback port, passes every
connection on to a target unchanged (TLS included: it never looks inside) and counts the
bytes each way, so a meter pointed at it shows what it costs on the wire, handshakes and
all. One thread with its own asyncio loop per relay.

    r = Relay("127.0.0.1", 10993).start()    # r.port: point the meter here
    r.counts()                                # {"up": bytes meter -> server, "down": ...}
    r.stop()
"""

import asyncio
import threading


class Relay:
    def __init__(self, host, port):
        self.target = (host, port)
        self.up = self.down = 0
        self.connections = 0
        self.port = None
        self._writers = set()        # every open stream, both sides: closed at stop
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("relay to %s:%d did not start" % self.target)
        return self

    def counts(self):
        return {"up": self.up, "down": self.down, "connections": self.connections}

    def stop(self):
        """Close the listener and every connection still open (so the target sees each
        one end, as it would when the meter goes), then end the thread."""
        def close_all():
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            # a transport closes its socket in a callback of its own: stop after those run
            self._loop.call_soon(self._loop.stop)
        self._loop.call_soon_threadsafe(close_all)
        self._thread.join(10)

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader, writer):
        self.connections += 1
        self._writers.add(writer)
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            self._writers.discard(writer)
            return
        self._writers.add(up_w)
        await asyncio.gather(self._pipe(reader, up_w, "up"), self._pipe(up_r, writer, "down"))

    async def _pipe(self, reader, writer, way):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if way == "up":
                    self.up += len(data)
                else:
                    self.down += len(data)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            self._writers.discard(writer)
            try:
                writer.close()
            except OSError:
                pass
