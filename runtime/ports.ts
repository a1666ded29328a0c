/**
 * The words of a container's network on `tbuild run`'s command line, as docker takes them:
 * `-p [IP:][HOST:]CTR[/tcp|udp]`, `-P` (every port the image EXPOSEs), `--network`, `--add-host
 * NAME:IP` and `--dns IP`. Pure parsing: what they ask for, as plain data for the container's
 * record (runtime/containers.ts); runtime/network.ts makes it so.
 */
import { isIP } from "node:net";
import { networkInterfaces } from "node:os";
import { TbuildError, UsageError } from "../errors/index.js";
import type { ContainerConfig } from "../oci/spec.js";
import type { PublishedPort } from "./containers.js";

/**
 * host: the host's network (the default, as BuildKit's OCI worker without CNI); none: loopback
 * only; private: a network namespace of its own with loopback, published ports and, through a
 * user-mode network stack when one is installed, outbound traffic.
 */
export type NetworkMode = "host" | "none" | "private";

/** `--network`'s values: docker's `default` is the host's here, its `bridge` our private one. */
export function parseNetworkMode(text: string): NetworkMode {
  if (text === "host" || text === "default") return "host";
  if (text === "none") return "none";
  if (text === "private" || text === "bridge") return "private";
  throw new UsageError(
    `--network must be host, none or private (bridge is its alias), not "${text}" (named networks are not supported)`,
  );
}

/** The ports a container asks for: PublishedPort with `hostPort` 0 where any free one will do. */
export type PortRequest = PublishedPort;

/** One `-p` value. */
export function parsePublishFlag(text: string): PortRequest {
  const bad = (why: string) => new UsageError(`-p ${text}: ${why}; the form is [IP:][HOST:]CTR[/tcp|udp]`);
  let rest = text;
  let protocol: "tcp" | "udp" = "tcp";
  const slash = rest.lastIndexOf("/");
  if (slash >= 0) {
    const named = rest.slice(slash + 1);
    if (named !== "tcp" && named !== "udp") throw bad(`the protocol must be tcp or udp, not "${named}"`);
    protocol = named;
    rest = rest.slice(0, slash);
  }
  let hostIp = "0.0.0.0";
  // An IPv6 address is written in brackets: [::1]:8080:80.
  const bracketed = /^\[([^\]]*)\]:(.*)$/.exec(rest);
  let parts: string[];
  if (bracketed) {
    hostIp = bracketed[1]!;
    parts = bracketed[2]!.split(":");
    if (parts.length !== 2) throw bad("an address needs a host port (possibly empty) and a container port");
  } else {
    parts = rest.split(":");
    if (parts.length > 3) throw bad("too many colons (write an IPv6 address in brackets)");
    if (parts.length === 3) hostIp = parts.shift()!;
  }
  if (isIP(hostIp) === 0) throw bad(`"${hostIp}" is not an IP address`);
  const [hostText, containerText] = parts.length === 2 ? parts : ["", parts[0]!];
  if (hostText!.includes("-") || containerText!.includes("-")) {
    throw new TbuildError(
      "E_NOT_SUPPORTED",
      `-p ${text}: port ranges are not supported yet: publish each port with a -p of its own`,
    );
  }
  const port = (value: string, what: string, allowZero: boolean): number => {
    if (!/^[0-9]+$/.test(value)) throw bad(`the ${what} port "${value}" is not a number`);
    const n = Number(value);
    if (n > 65535 || (n === 0 && !allowZero)) throw bad(`the ${what} port ${n} is out of range`);
    return n;
  };
  return {
    hostIp,
    hostPort: hostText === "" ? 0 : port(hostText!, "host", false),
    containerPort: port(containerText!, "container", false),
    protocol,
  };
}

/** `-P`: every port the image's config EXPOSEs, each to a free host port on every address. */
export function exposedPortRequests(config: ContainerConfig): PortRequest[] {
  return Object.keys(config.ExposedPorts ?? {}).map((key) => {
    const [number, protocol = "tcp"] = key.split("/");
    if (protocol !== "tcp" && protocol !== "udp") {
      throw new TbuildError(
        "E_NOT_SUPPORTED",
        `-P: the image exposes ${key}; only tcp and udp are supported`,
      );
    }
    return { hostIp: "0.0.0.0", hostPort: 0, containerPort: Number(number), protocol };
  });
}

/** `--dns IP`: a nameserver's address. */
export function parseDnsFlag(text: string): string {
  if (isIP(text) === 0) throw new UsageError(`--dns ${text}: a nameserver is an IP address`);
  return text;
}

/**
 * `--add-host NAME:IP` (or `NAME=IP`); `host-gateway` as the IP stands for the host as the
 * container reaches it: the host's first non-loopback IPv4 address (through the user-mode
 * network stack in a private network, directly in the host's).
 */
export function parseAddHostFlag(text: string): [string, string] {
  const separator = /[=:]/.exec(text);
  const name = separator ? text.slice(0, separator.index) : "";
  let address = separator ? text.slice(separator.index + 1) : "";
  if (address.startsWith("[") && address.endsWith("]")) address = address.slice(1, -1);
  if (address === "host-gateway") address = hostGatewayAddress();
  if (!/^[^\s#:=]+$/.test(name) || isIP(address) === 0) {
    throw new UsageError(`--add-host ${text}: the form is NAME:IP (or NAME:host-gateway)`);
  }
  return [name, address];
}

function hostGatewayAddress(): string {
  for (const addresses of Object.values(networkInterfaces())) {
    for (const address of addresses ?? []) {
      if (address.family === "IPv4" && !address.internal) return address.address;
    }
  }
  throw new TbuildError(
    "E_NO_HOST_GATEWAY",
    "--add-host NAME:host-gateway: this host has no non-loopback IPv4 address; give the address itself",
  );
}

/** What a container's network is to be, as its record keeps it (so `tbuild start` can redo it). */
export interface NetworkSettings {
  network: NetworkMode;
  /** Requested: `-p` and `-P` (host port 0: any free one). */
  ports: PortRequest[];
  hostname?: string;
  /** `--dns`: the nameservers of a private network's resolv.conf. */
  dns?: string[];
  /** `--add-host`: name → address, appended to /etc/hosts. */
  extraHosts?: Record<string, string>;
}

export interface NetworkFlags {
  network?: string;
  publish?: string[];
  publishAll?: boolean;
  hostname?: string;
  dns?: string[];
  addHosts?: string[];
}

/**
 * The flags checked against each other, as docker's rules go: `-p`/`-P` imply a private network
 * (and refuse another one), `--dns` is for a private network only (with the host's network the
 * container uses the host's resolvers; with none it has nothing to reach them by).
 */
export function networkSettings(flags: NetworkFlags, config: ContainerConfig): NetworkSettings {
  const ports = (flags.publish ?? []).map(parsePublishFlag);
  if (flags.publishAll) ports.push(...exposedPortRequests(config));
  const publishing = (flags.publish ?? []).length > 0 || flags.publishAll === true;
  const network =
    flags.network === undefined ? (publishing ? "private" : "host") : parseNetworkMode(flags.network);
  if (publishing && network !== "private") {
    throw new UsageError(
      `-p and -P publish ports into a private network: drop --network ${flags.network}, or use --network private`,
    );
  }
  const dns = (flags.dns ?? []).map(parseDnsFlag);
  if (dns.length > 0 && network !== "private") {
    throw new UsageError(
      `--dns sets the nameservers of a private network; with --network ${flags.network ?? "host"} the container has ${network === "host" ? "the host's" : "none to reach"}: drop --dns, or add --network private`,
    );
  }
  if (flags.hostname !== undefined && !/^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,62})$/.test(flags.hostname)) {
    throw new UsageError(
      `--hostname ${flags.hostname}: a host name is letters, digits, "-" and "." (at most 63)`,
    );
  }
  const extraHosts = Object.fromEntries((flags.addHosts ?? []).map(parseAddHostFlag));
  return {
    network,
    ports,
    ...(flags.hostname !== undefined ? { hostname: flags.hostname } : {}),
    ...(dns.length > 0 ? { dns } : {}),
    ...(Object.keys(extraHosts).length > 0 ? { extraHosts } : {}),
  };
}
