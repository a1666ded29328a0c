// A small HTTP service: GET /format/<milliseconds> answers with the duration in words, by the `ms`
// package; GET /healthz answers "ok". It listens on $PORT (default 8080) and stops on SIGTERM, which
// matters for a process that runs as PID 1 in a container.
import http from "node:http";
import os from "node:os";
import ms from "ms";

const port = Number(process.env.PORT ?? 8080);

const server = http.createServer((request, response) => {
  const url = new URL(request.url ?? "/", "http://localhost");
  const format = /^\/format\/(\d+)$/.exec(url.pathname);
  if (format) {
    const milliseconds = Number(format[1]);
    sendJson(response, 200, {
      milliseconds,
      short: ms(milliseconds),
      long: ms(milliseconds, { long: true }),
      servedBy: os.userInfo().username,
    });
  } else if (url.pathname === "/healthz") {
    response.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
  } else {
    sendJson(response, 404, { error: `no route for ${url.pathname}` });
  }
});

function sendJson(response, status, body) {
  response.writeHead(status, { "content-type": "application/json" }).end(`${JSON.stringify(body)}\n`);
}

server.listen(port, () => {
  console.log(`node-service listening on port ${port}`);
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
