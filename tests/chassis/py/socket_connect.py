# Tries to open a TCP connection to 127.0.0.1:argv[1] (a port the host listens on).
import socket
import sys

try:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect(("127.0.0.1", int(sys.argv[1])))
    s.sendall(b"hello")
    print("connected")
except Exception as exc:
    print(f"denied: {type(exc).__name__}: {exc}")
