"""N loopback TCP round trips: connect, the server (a forked process) accepts and sends one
byte, the client reads it and closes. Lockstep, so the accept queue never overflows (an
overflowing queue drops SYNs and measures the 1 s retransmission timer instead). Prints the
client's wall time in ms."""
import os
import socket
import sys
import time

n = int(sys.argv[1])
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 0))
server.listen(128)
port = server.getsockname()[1]
pid = os.fork()
if pid == 0:
    for _ in range(n):
        connection, _ = server.accept()
        connection.sendall(b"x")
        connection.close()
    os._exit(0)
server.close()
start = time.perf_counter()
for _ in range(n):
    client = socket.create_connection(("127.0.0.1", port))
    client.recv(1)
    client.close()
elapsed = time.perf_counter() - start
os.waitpid(pid, 0)
print(f"{elapsed * 1000:.1f}")
