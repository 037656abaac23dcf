"""A small web app written the way tutorials write one for `docker run -p 80:80 IMAGE`.

It listens on port 80, serves one page and has no health routes; the image runs as root by
default (no USER). kea's end-to-end tests run it as an image from elsewhere, to show what the
operator does with such images (docs/README.md, "Bring your own image").

GREETING_FILE, when set, names a file to read the greeting from: a file that is missing
crashes the app at start, as a missing configuration file crashes real ones.
"""

import http.server
import os

PORT = 80

greeting = "Hello from Python!\n"
if os.environ.get("GREETING_FILE"):
    with open(os.environ["GREETING_FILE"], encoding="utf-8") as source:
        greeting = source.read()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/":
            self.send_error(404)
            return
        body = greeting.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


print(f"listening on port {PORT}", flush=True)
http.server.ThreadingHTTPServer(("", PORT), Handler).serve_forever()
