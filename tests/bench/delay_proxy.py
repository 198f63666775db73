"""A TCP proxy on loopback that delays what the server sends back by a
settable number of seconds (the round trip of every request grows by it):
Redis "one network hop away" for the end-to-end tests and the benchmarks,
without tc netem or a network namespace. Standard library only.

    proxy = DelayProxy(upstream_port, delay_s=0.001); proxy.port; proxy.delay_s = 2.0
    python3 delay_proxy.py UPSTREAM_PORT DELAY_MS   (prints its port, runs until killed)

Each connection has a reader thread per direction; replies are queued with
the time they arrived and written out delay_s later, in order, so that a
pipelined batch keeps its shape. The delay applies to bytes that arrive
after it is set.
"""

import collections
import socket
import sys
import threading
import time

CHUNK = 65536


class DelayProxy:
    def __init__(self, upstream_port, delay_s=0.0, upstream_host="127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.delay_s = delay_s
        self.connections = 0
        # request bursts (reads of the client's bytes) per connection, in
        # accept order: about one per round trip the client waits for
        self.requests = []
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind(("127.0.0.1", 0))
        self._lsock.listen(64)
        self.port = self._lsock.getsockname()[1]
        self._closed = False
        self._socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self._closed = True
        for s in [self._lsock, *self._socks]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self._lsock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socks += [client, server]
            self.connections += 1
            self.requests.append(0)
            threading.Thread(target=self._pipe, args=(client, server, len(self.requests) - 1),
                             daemon=True).start()
            self._delayed(server, client)

    def _pipe(self, src, dst, k):
        try:
            while True:
                data = src.recv(CHUNK)
                if not data:
                    break
                self.requests[k] += 1
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _delayed(self, src, dst):
        queue = collections.deque()
        cond = threading.Condition()
        done = []

        def reader():
            try:
                while True:
                    data = src.recv(CHUNK)
                    if not data:
                        break
                    with cond:
                        queue.append((time.monotonic() + self.delay_s, data))
                        cond.notify()
            except OSError:
                pass
            with cond:
                done.append(True)
                cond.notify()

        def writer():
            try:
                while True:
                    with cond:
                        while not queue and not done:
                            cond.wait()
                        if not queue:
                            break
                        due, data = queue.popleft()
                    wait = due - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    dst.sendall(data)
            except OSError:
                pass
            try:
                dst.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        threading.Thread(target=reader, daemon=True).start()
        threading.Thread(target=writer, daemon=True).start()


if __name__ == "__main__":
    p = DelayProxy(int(sys.argv[1]), float(sys.argv[2]) / 1000.0)
    print(p.port, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        p.close()
