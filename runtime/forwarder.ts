/**
 * The port forwarder of a container's private network, a process of its own (an entry point of
 * the bundle, scripts/bundle.mjs): started by runtime/network.ts in a new network namespace,
 * which the container then joins. The process running the container binds the host's sockets
 * (in the host's network) and passes them here over the IPC channel; this process relays each TCP
 * connection, and each UDP client's datagrams, to 127.0.0.1:PORT inside the namespace, as
 * rootlesskit's builtin port driver does. No privilege is needed: it works rootless.
 *
 * It brings the namespace's loopback up first (`ip link set lo up`, argv[2] is `ip`), and exits
 * when its IPC channel closes: its parent ended it, or died.
 *
 * Messages in: `{ type: "tcp" | "udp", containerPort }` with the bound socket as handle. Out:
 * `{ type: "ready" }` once loopback is up, `{ type: "forwarding", containerPort }` per socket,
 * `{ type: "error", message }`.
 */
import { execFileSync } from "node:child_process";
import dgram from "node:dgram";
import net from "node:net";

/** A UDP client silent this long is forgotten (its socket in the namespace closed), as conntrack does. */
const UDP_IDLE_MS = 60_000;

interface ForwardMessage {
  type: "tcp" | "udp";
  containerPort: number;
}

function send(message: object): void {
  process.send?.(message);
}

function relayTcp(server: net.Server, containerPort: number): void {
  server.on("connection", (client) => {
    const upstream = net.connect({ host: "127.0.0.1", port: containerPort });
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  });
}

function relayUdp(host: dgram.Socket, containerPort: number): void {
  const clients = new Map<string, { socket: dgram.Socket; timer: NodeJS.Timeout }>();
  host.on("message", (datagram, from) => {
    const key = `${from.address}:${from.port}`;
    let client = clients.get(key);
    if (client === undefined) {
      const socket = dgram.createSocket("udp4");
      socket.on("message", (reply, sender) => {
        if (sender.port === containerPort) host.send(reply, from.port, from.address);
      });
      socket.on("error", () => {});
      const forget = () => {
        clients.delete(key);
        socket.close();
      };
      client = { socket, timer: setTimeout(forget, UDP_IDLE_MS) };
      clients.set(key, client);
    }
    client.timer.refresh();
    client.socket.send(datagram, containerPort, "127.0.0.1");
  });
  host.on("error", () => {});
}

try {
  execFileSync(process.argv[2] ?? "ip", ["link", "set", "lo", "up"], { stdio: ["ignore", "ignore", "pipe"] });
} catch (err) {
  const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
  send({
    type: "error",
    message: `cannot bring up the loopback interface: ${stderr || (err as Error).message}`,
  });
  process.exit(1);
}
process.on("message", (message: ForwardMessage, handle: unknown) => {
  if (message.type === "tcp") relayTcp(handle as net.Server, message.containerPort);
  else relayUdp(handle as dgram.Socket, message.containerPort);
  send({ type: "forwarding", containerPort: message.containerPort });
});
process.on("disconnect", () => process.exit(0));
send({ type: "ready" });
