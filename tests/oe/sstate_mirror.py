"""An sstate mirror over HTTP for the tier's build farm (test_sharing.py): Python's http.server
serving one directory's files (what `python3 -m http.server` does), bound to 127.0.0.1, on the
port given or else one the kernel picks; the first line it prints names the port.

    python3 sstate_mirror.py DIRECTORY [--port N] [--stop-at PATTERN]

--stop-at PATTERN: the server goes away in the middle of sending the first file whose name
matches PATTERN (fnmatch): it sends the headers and half of the bytes, then the process ends,
so that the download is cut short and every later connection is refused. A mirror host that
goes down mid-build, at the moment the build itself chooses: after BitBake found the object
there, as it fetches it.
"""

import argparse
import fnmatch
import functools
import http.server
import os
import sys


class Handler(http.server.SimpleHTTPRequestHandler):
    stop_at = None

    def copyfile(self, source, outputfile):
        name = os.path.basename(self.translate_path(self.path))
        if self.stop_at and fnmatch.fnmatch(name, self.stop_at):
            data = source.read()
            outputfile.write(data[:len(data) // 2])
            outputfile.flush()
            print("stopped while sending %s (%d of %d bytes sent)" % (name, len(data) // 2, len(data)), flush=True)
            os._exit(0)
        super().copyfile(source, outputfile)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stop-at", metavar="PATTERN")
    args = parser.parse_args()
    Handler.stop_at = args.stop_at
    handler = functools.partial(Handler, directory=args.directory)
    with http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler) as server:
        print("serving %s on 127.0.0.1 port %d" % (args.directory, server.server_address[1]), flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
