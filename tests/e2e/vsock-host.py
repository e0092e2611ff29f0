#!/usr/bin/env python3
"""Host side of the e2e vsock checks, talking smx's hybrid vsock.

serve UDS          accept one connection on the Unix socket UDS (where a
                   guest connection to port P arrives when UDS is
                   <vsock>_P), read a line, answer "host-reply:<line>".
connect VSOCK PORT MSG
                   connect to the VM's vsock socket, ask for guest PORT
                   with "CONNECT PORT\\n" until the guest listens (30 s),
                   send MSG and print the guest's answer line.
"""
import os
import socket
import sys
import time


def read_line(s):
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").rstrip("\n")


def serve(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    srv.settimeout(60)
    conn, _ = srv.accept()
    line = read_line(conn)
    conn.sendall(b"host-reply:" + line.encode() + b"\n")
    conn.close()
    print("SERVED", line, flush=True)


def connect(path, port, msg):
    deadline = time.time() + 30
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            s.sendall(b"CONNECT %d\n" % port)
            ok = read_line(s)
            if ok.startswith("OK "):
                break
        except OSError:
            pass
        s.close()
        if time.time() > deadline:
            print("NO-OK", flush=True)
            return 1
        time.sleep(0.2)
    s.sendall(msg.encode() + b"\n")
    print("HOST-GOT:" + read_line(s), flush=True)
    s.close()
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif sys.argv[1] == "connect":
        sys.exit(connect(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
    else:
        sys.exit(__doc__)
