/**
 * The words of `tbuild run`'s network flags, as docker takes them: `-p` in its forms, `-P` from
 * the image's EXPOSE, and the rules between `--network`, `-p` and `--dns`.
 */
import { describe, expect, it } from "vitest";
import { networkSettings, parseAddHostFlag, parsePublishFlag } from "../../runtime/ports.js";
import { hostAddress } from "../helpers/network.js";

describe("-p", () => {
  it("takes CTR, HOST:CTR, IP:HOST:CTR, IP::CTR, [IPv6]:HOST:CTR and a /tcp or /udp suffix", () => {
    expect(parsePublishFlag("80")).toEqual({
      hostIp: "0.0.0.0",
      hostPort: 0,
      containerPort: 80,
      protocol: "tcp",
    });
    expect(parsePublishFlag("8080:80/udp")).toEqual({
      hostIp: "0.0.0.0",
      hostPort: 8080,
      containerPort: 80,
      protocol: "udp",
    });
    expect(parsePublishFlag("127.0.0.1:8080:80")).toMatchObject({ hostIp: "127.0.0.1", hostPort: 8080 });
    expect(parsePublishFlag("127.0.0.1::80")).toMatchObject({ hostIp: "127.0.0.1", hostPort: 0 });
    expect(parsePublishFlag("[::1]:8080:80/tcp")).toMatchObject({
      hostIp: "::1",
      hostPort: 8080,
      containerPort: 80,
    });
  });

  it("refuses ranges as not supported yet, and bad words as usage errors naming the flag", () => {
    expect(() => parsePublishFlag("8000-8010:80")).toThrow(/port ranges are not supported yet/);
    expect(() => parsePublishFlag("80/sctp")).toThrow(/^-p 80\/sctp: the protocol must be tcp or udp/);
    expect(() => parsePublishFlag("99999:80")).toThrow(/the host port 99999 is out of range/);
    expect(() => parsePublishFlag("web:8080:80")).toThrow(/"web" is not an IP address/);
    expect(() => parsePublishFlag("8080:http")).toThrow(/the container port "http" is not a number/);
  });
});

describe("networkSettings", () => {
  const exposing = { ExposedPorts: { "8080/tcp": {}, "53/udp": {} } };

  it("-p and -P imply a private network; -P publishes each EXPOSEd port to a free host port", () => {
    expect(networkSettings({}, exposing)).toEqual({ network: "host", ports: [] });
    expect(networkSettings({ publishAll: true }, exposing)).toEqual({
      network: "private",
      ports: [
        { hostIp: "0.0.0.0", hostPort: 0, containerPort: 8080, protocol: "tcp" },
        { hostIp: "0.0.0.0", hostPort: 0, containerPort: 53, protocol: "udp" },
      ],
    });
    expect(networkSettings({ network: "bridge" }, {}).network).toBe("private");
    expect(networkSettings({ network: "default" }, {}).network).toBe("host");
  });

  it("refuses -p with the host's network, --dns without a private one, and unknown networks", () => {
    expect(() => networkSettings({ network: "host", publish: ["80"] }, {})).toThrow(
      /-p and -P publish ports into a private network: drop --network host/,
    );
    expect(() => networkSettings({ dns: ["1.1.1.1"] }, {})).toThrow(
      /--dns sets the nameservers of a private network/,
    );
    expect(() => networkSettings({ network: "mynet" }, {})).toThrow(/named networks are not supported/);
    expect(() => networkSettings({ network: "private", dns: ["resolver"] }, {})).toThrow(
      /a nameserver is an IP address/,
    );
  });

  it("--add-host NAME:IP, and host-gateway as the host's own address", () => {
    expect(parseAddHostFlag("db:10.0.0.5")).toEqual(["db", "10.0.0.5"]);
    expect(parseAddHostFlag("v6:[fd00::1]")).toEqual(["v6", "fd00::1"]);
    expect(parseAddHostFlag("gw:host-gateway")).toEqual(["gw", hostAddress()]);
    expect(() => parseAddHostFlag("db")).toThrow(/the form is NAME:IP/);
  });
});
