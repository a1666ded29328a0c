/**
 * A TCP proxy on a real loopback socket, between a client and a server (sshd): it counts the bytes
 * each way, and on demand cuts every connection (both sockets destroyed, as a dropped link or a
 * killed host looks) or freezes them (bytes are swallowed and nothing is closed, as a dead route or
 * a suspended host looks, which only keepalives can tell).
 */
import type { AddressInfo } from "node:net";
import net from "node:net";

export interface TcpProxy {
  port: number;
  /** Bytes forwarded from clients to the server, and back. */
  bytes: { up: number; down: number };
  /** Connections accepted so far. */
  connections: number;
  /** Destroys every open connection, both sides. */
  cut(): void;
  /** Cuts every open connection once `bytes` more have gone up (client to server) from now. */
  cutAfterUp(bytes: number): void;
  /** Cuts every open connection once `bytes` more have come down (server to client) from now. */
  cutAfterDown(bytes: number): void;
  /** From now on, open connections forward nothing (and stay open). */
  freeze(): void;
  stop(): Promise<void>;
}

export async function startTcpProxy(target: { port: number; host?: string }): Promise<TcpProxy> {
  const open = new Set<net.Socket>();
  let frozen = false;
  const cutAt: { up?: number; down?: number } = {};
  const proxy = {
    bytes: { up: 0, down: 0 },
    connections: 0,
  };
  const forward = (from: net.Socket, to: net.Socket, direction: "up" | "down") => {
    from.on("data", (chunk: Buffer) => {
      if (frozen) return;
      proxy.bytes[direction] += chunk.length;
      const at = cutAt[direction];
      if (at !== undefined && proxy.bytes[direction] >= at) {
        delete cutAt[direction];
        for (const socket of open) socket.destroy();
        return;
      }
      to.write(chunk);
    });
    from.on("end", () => {
      if (!frozen) to.end();
    });
  };
  // Forwarded as it comes, as a router would: no bytes held back for Nagle's algorithm.
  const server = net.createServer({ noDelay: true }, (client) => {
    proxy.connections++;
    const upstream = net.connect({ port: target.port, host: target.host ?? "127.0.0.1", noDelay: true });
    open.add(client);
    open.add(upstream);
    for (const socket of [client, upstream]) {
      socket.on("error", () => {});
      socket.on("close", () => {
        open.delete(socket);
        if (!frozen) (socket === client ? upstream : client).destroy();
      });
    }
    forward(client, upstream, "up");
    forward(upstream, client, "down");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(proxy, {
    port,
    cut: () => {
      for (const socket of open) socket.destroy();
    },
    freeze: () => {
      frozen = true;
    },
    cutAfterUp: (bytes: number) => {
      cutAt.up = proxy.bytes.up + bytes;
    },
    cutAfterDown: (bytes: number) => {
      cutAt.down = proxy.bytes.down + bytes;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        for (const socket of open) socket.destroy();
        server.close(() => resolve());
      }),
  });
}
