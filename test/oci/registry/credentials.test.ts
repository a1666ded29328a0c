import { mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import {
  dockerConfigPath,
  eraseCredentials,
  getCredentials,
  normalizeRegistryName,
  storeCredentials,
} from "../../../oci/registry/index.js";
import { tempDirs } from "../../helpers/temp.js";

/** Temporary directories, removed when the file's tests end. */
const tempDir = tempDirs();

function dockerDir(config?: unknown): NodeJS.ProcessEnv {
  const dir = tempDir("docker");
  if (config !== undefined) writeFileSync(path.join(dir, "config.json"), JSON.stringify(config));
  return { DOCKER_CONFIG: dir, PATH: process.env.PATH };
}

const auth = (user: string, password: string) => Buffer.from(`${user}:${password}`).toString("base64");

describe("docker's config.json", () => {
  it("is found through DOCKER_CONFIG, else ~/.docker", () => {
    expect(dockerConfigPath({ DOCKER_CONFIG: "/cfg" })).toBe("/cfg/config.json");
    expect(dockerConfigPath({ HOME: "/home/u" })).toBe("/home/u/.docker/config.json");
  });

  it("finds auths under docker's spellings of a server, Docker Hub's included", async () => {
    const env = dockerDir({
      auths: {
        "https://index.docker.io/v1/": { auth: auth("hub", "h") },
        "http://reg.example:5000/v2/": { auth: auth("reg", "r") },
        "tok.example": { identitytoken: "refresh-me" },
      },
    });
    expect(await getCredentials("docker.io", env)).toEqual({ username: "hub", password: "h" });
    expect(await getCredentials("reg.example:5000", env)).toEqual({ username: "reg", password: "r" });
    expect(await getCredentials("tok.example", env)).toEqual({ identityToken: "refresh-me" });
    expect(await getCredentials("other.example", env)).toBeUndefined();
    expect(await getCredentials("anything", dockerDir())).toBeUndefined();
  });

  it("is written as docker writes it: Docker Hub's key, other keys kept, private to the user", async () => {
    const env = dockerDir({ auths: { "old.example": { auth: auth("a", "b") } }, detachKeys: "ctrl-x" });
    expect(await storeCredentials("docker.io", { username: "me", password: "pw" }, env)).toBe(
      dockerConfigPath(env),
    );
    const written = JSON.parse(readFileSync(dockerConfigPath(env), "utf8"));
    expect(written).toEqual({
      auths: {
        "old.example": { auth: auth("a", "b") },
        "https://index.docker.io/v1/": { auth: auth("me", "pw") },
      },
      detachKeys: "ctrl-x",
    });
    expect(statSync(dockerConfigPath(env)).mode & 0o777).toBe(0o600);
    expect(await eraseCredentials("docker.io", env)).toBe(true);
    expect(await eraseCredentials("docker.io", env)).toBe(false);
  });

  it("names the file when it is not JSON", async () => {
    const env = dockerDir();
    mkdirSync(env.DOCKER_CONFIG!, { recursive: true });
    writeFileSync(dockerConfigPath(env), "{ not json");
    await expect(getCredentials("x.example", env)).rejects.toThrow(
      `${dockerConfigPath(env)} is not valid JSON`,
    );
  });

  it("takes registry names as users type them at login", () => {
    expect(normalizeRegistryName(undefined)).toBe("docker.io");
    expect(normalizeRegistryName("https://index.docker.io/v1/")).toBe("docker.io");
    expect(normalizeRegistryName("https://reg.example:5000/v2/")).toBe("reg.example:5000");
    expect(normalizeRegistryName("127.0.0.1:5000")).toBe("127.0.0.1:5000");
  });
});
