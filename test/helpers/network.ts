/**
 * Pieces for the tests of `tbuild run`'s private network (-p, -P, outbound): free ports, an HTTP
 * get and a UDP exchange from the host, the host's non-loopback address, and a small server image
 * (busybox httpd on 8080, a static UDP echo server on 9999) that says when it listens.
 */
import { execFileSync } from "node:child_process";
import dgram from "node:dgram";
import { chmodSync, writeFileSync } from "node:fs";
import net from "node:net";
import { networkInterfaces } from "node:os";
import path from "node:path";

/** A TCP (and, with `udp`, also UDP) port free on 127.0.0.1 a moment ago. */
export async function freePort(): Promise<number> {
  for (;;) {
    const server = net.createServer();
    const port = await new Promise<number>((resolve) => {
      server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port));
    });
    await new Promise((resolve) => server.close(resolve));
    const udp = dgram.createSocket("udp4");
    const free = await new Promise<boolean>((resolve) => {
      udp.once("error", () => resolve(false));
      udp.bind(port, "127.0.0.1", () => resolve(true));
    });
    await new Promise<void>((resolve) => udp.close(() => resolve()));
    if (free) return port;
  }
}

/** The body of GET http://HOST:PORT/PATH, or the error's code. */
export async function httpGet(port: number, host = "127.0.0.1", file = ""): Promise<string> {
  try {
    const response = await fetch(`http://${host}:${port}/${file}`, { signal: AbortSignal.timeout(20_000) });
    return await response.text();
  } catch (err) {
    return `error: ${((err as Error).cause as NodeJS.ErrnoException | undefined)?.code ?? (err as Error).message}`;
  }
}

/** Sends `text` to 127.0.0.1:PORT over UDP and resolves to the first reply. */
export function udpExchange(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket("udp4");
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error(`no UDP reply from 127.0.0.1:${port}`));
    }, 20_000);
    socket.once("message", (reply) => {
      clearTimeout(timer);
      socket.close();
      resolve(reply.toString());
    });
    socket.send(text, port, "127.0.0.1");
  });
}

/** This host's first non-loopback IPv4 address: reachable from a private network through slirp4netns. */
export function hostAddress(): string {
  for (const addresses of Object.values(networkInterfaces())) {
    for (const address of addresses ?? [])
      if (address.family === "IPv4" && !address.internal) return address.address;
  }
  throw new Error("this host has no non-loopback IPv4 address");
}

/**
 * A TCP server on `host`, port 0, that records what each connection sends; `received` resolves
 * with the first connection's data once it closes.
 */
export async function recordingServer(host: string): Promise<{
  port: number;
  connections: () => number;
  received: Promise<string>;
  close: () => Promise<void>;
}> {
  let count = 0;
  let deliver: (text: string) => void = () => {};
  const received = new Promise<string>((resolve) => {
    deliver = resolve;
  });
  const server = net.createServer((socket) => {
    count++;
    let data = "";
    socket.on("data", (chunk) => {
      data += chunk.toString();
    });
    socket.on("end", () => {
      socket.end();
      deliver(data);
    });
    socket.on("error", () => {});
  });
  const port = await new Promise<number>((resolve) => {
    server.listen(0, host, () => resolve((server.address() as net.AddressInfo).port));
  });
  return {
    port,
    connections: () => count,
    received,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

const UDP_ECHO_C = `
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons(atoi(argv[1]));
  if (bind(s, (struct sockaddr *)&a, sizeof a) != 0) return 1;
  for (;;) {
    char in[1500], out[1600] = "echo:";
    struct sockaddr_in from;
    socklen_t len = sizeof from;
    int n = recvfrom(s, in, sizeof in, 0, (struct sockaddr *)&from, &len);
    if (n < 0) continue;
    memcpy(out + 5, in, n);
    sendto(s, out, n + 5, 0, (struct sockaddr *)&from, len);
  }
}
`;

/**
 * Prints the container's network interfaces on one line, serves its host name over HTTP on 8080
 * (httpd) and echoes UDP on 9999, says "ready" once both listen, and exits 0 on SIGTERM.
 */
const SERVE_SH = `#!/bin/sh
trap 'exit 0' TERM INT
echo "interfaces: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' ')"
mkdir -p /www && hostname > /www/index.html
udpecho 9999 &
httpd -p 8080 -h /www
echo ready
while :; do sleep 1 & wait $!; done
`;

/** Writes the server image's build context into `dir` (compiling the UDP echo server statically). */
export function writeServerContext(dir: string): void {
  writeFileSync(path.join(dir, "udpecho.c"), UDP_ECHO_C);
  execFileSync("gcc", ["-static", "-O2", "-o", path.join(dir, "udpecho"), path.join(dir, "udpecho.c")]);
  writeFileSync(path.join(dir, "serve"), SERVE_SH, { mode: 0o755 });
  writeFileSync(
    path.join(dir, "Dockerfile"),
    'FROM busybox\nCOPY serve udpecho /bin/\nEXPOSE 8080 9999/udp\nCMD ["/bin/serve"]\n',
  );
  for (const file of ["udpecho", "serve", "Dockerfile", "udpecho.c"]) chmodSync(path.join(dir, file), 0o755);
}
