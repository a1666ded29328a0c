import { describe, expect, it } from "vitest";
import {
  familiarReference,
  formatReference,
  InvalidReferenceError,
  parseReference,
  repositoryName,
} from "../../oci/reference.js";

const SHA = "86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa";

describe("parseReference normalizes as Docker does", () => {
  // [input, full form, familiar form]
  const table: Array<[string, string, string]> = [
    ["busybox", "docker.io/library/busybox:latest", "busybox:latest"],
    ["busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"],
    ["library/busybox", "docker.io/library/busybox:latest", "busybox:latest"],
    ["docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"],
    ["docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"],
    ["index.docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"],
    ["index.docker.io/user/app", "docker.io/user/app:latest", "user/app:latest"],
    ["user/app", "docker.io/user/app:latest", "user/app:latest"],
    ["docker.io/library/foo/bar", "docker.io/library/foo/bar:latest", "library/foo/bar:latest"],
    ["store/foo/bar", "docker.io/store/foo/bar:latest", "store/foo/bar:latest"],
    ["localhost/x", "localhost/x:latest", "localhost/x:latest"],
    ["localhost:5000/x:1", "localhost:5000/x:1", "localhost:5000/x:1"],
    ["myhost:5000/app:1", "myhost:5000/app:1", "myhost:5000/app:1"],
    ["test-com:8080/foo", "test-com:8080/foo:latest", "test-com:8080/foo:latest"],
    ["test_com/foo", "docker.io/test_com/foo:latest", "test_com/foo:latest"],
    ["xn--n3h.com:18080/foo", "xn--n3h.com:18080/foo:latest", "xn--n3h.com:18080/foo:latest"],
    ["127.0.0.1:5000/a/b", "127.0.0.1:5000/a/b:latest", "127.0.0.1:5000/a/b:latest"],
    [
      "[fc00::1]:5000/docker/docker",
      "[fc00::1]:5000/docker/docker:latest",
      "[fc00::1]:5000/docker/docker:latest",
    ],
    ["ghcr.io/org/app", "ghcr.io/org/app:latest", "ghcr.io/org/app:latest"],
    ["Foo/bar", "Foo/bar:latest", "Foo/bar:latest"],
    ["192.168.0.1", "docker.io/library/192.168.0.1:latest", "192.168.0.1:latest"],
    ["192.168.0.1:80", "docker.io/library/192.168.0.1:80", "192.168.0.1:80"],
    ["dock__er/docker---rules", "docker.io/dock__er/docker---rules:latest", "dock__er/docker---rules:latest"],
    ["foo:V1.0_RC-2", "docker.io/library/foo:V1.0_RC-2", "foo:V1.0_RC-2"],
    [`busybox@sha256:${SHA}`, `docker.io/library/busybox@sha256:${SHA}`, `busybox@sha256:${SHA}`],
    [
      `busybox:latest@sha256:${SHA}`,
      `docker.io/library/busybox:latest@sha256:${SHA}`,
      `busybox:latest@sha256:${SHA}`,
    ],
    [`host:5000/a/b:tag@sha256:${SHA}`, `host:5000/a/b:tag@sha256:${SHA}`, `host:5000/a/b:tag@sha256:${SHA}`],
    [
      "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
      "docker.io/library/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a:latest",
      "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a:latest",
    ],
  ];
  it.each(table)("%s → %s (docker prints %s)", (input, full, familiar) => {
    const ref = parseReference(input);
    expect(formatReference(ref)).toBe(full);
    expect(familiarReference(ref)).toBe(familiar);
    // The printed forms parse back to the same reference.
    expect(parseReference(full)).toEqual(ref);
    expect(parseReference(familiar)).toEqual(ref);
  });

  it("splits a reference into domain, path, tag and digest", () => {
    expect(parseReference(`localhost:5000/team/app:v2@sha256:${SHA}`)).toEqual({
      domain: "localhost:5000",
      path: "team/app",
      tag: "v2",
      digest: `sha256:${SHA}`,
    });
  });

  it("defaults the tag to latest only when there is no digest", () => {
    expect(parseReference("alpine").tag).toBe("latest");
    const pinned = parseReference(`alpine@sha256:${SHA}`);
    expect(pinned.tag).toBeUndefined();
    expect(pinned.digest).toBe(`sha256:${SHA}`);
  });

  it("accepts sha384 and sha512 digests", () => {
    expect(parseReference(`a@sha384:${"ab".repeat(48)}`).digest).toBe(`sha384:${"ab".repeat(48)}`);
    expect(parseReference(`a@sha512:${"cd".repeat(64)}`).digest).toBe(`sha512:${"cd".repeat(64)}`);
  });

  it("names the repository without tag or digest", () => {
    expect(repositoryName(parseReference("busybox:1"))).toBe("docker.io/library/busybox");
    expect(repositoryName(parseReference(`myhost:5000/app@sha256:${SHA}`))).toBe("myhost:5000/app");
  });

  it("accepts a path of exactly 255 characters, a 128-character tag", () => {
    const path = `a/${"b".repeat(253)}`;
    expect(parseReference(`${path}:${"t".repeat(128)}`).path).toBe(path);
  });
});

describe("invalid references say what is wrong", () => {
  const invalid: Array<[string, string]> = [
    ["", "the reference is empty"],
    ["Busybox", 'repository name "library/Busybox" must be lowercase'],
    ["docker/Docker", 'repository name "docker/Docker" must be lowercase'],
    ["docker.io/docker/Docker", 'repository name "docker/Docker" must be lowercase'],
    [
      "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
      "is an image ID, not a repository name",
    ],
    [`busybox@sha256:${SHA.slice(1)}`, 'must be "sha256:" followed by 64 lowercase hexadecimal characters'],
    [
      `busybox@sha256:${SHA.toUpperCase()}`,
      'must be "sha256:" followed by 64 lowercase hexadecimal characters',
    ],
    [`busybox@md5:${"a".repeat(32)}`, 'unsupported digest algorithm "md5"'],
    ["busybox@latest", 'digest "latest" must be "sha256:" followed by 64'],
    ["busybox:", 'tag "" must start with a letter'],
    ["busybox:-x", 'tag "-x" must start with a letter'],
    ["busybox:a+b", 'tag "a+b"'],
    [`busybox:${"t".repeat(129)}`, "tag must not be more than 128 characters (it has 129)"],
    ["-docker", 'repository path component "-docker"'],
    ["-docker/docker", 'repository path component "-docker"'],
    ["docker-/docker", 'repository path component "docker-"'],
    ["____/____", 'repository path component "____"'],
    // A first element with a "." is taken as a registry, as Docker does.
    ["dock..er/docker", 'registry "dock..er" is not a valid host name'],
    ["dock_.er/docker", 'registry "dock_.er" is not a valid host name'],
    ["dock-_er/docker", 'repository path component "dock-_er"'],
    ["docker/", "empty component"],
    ["docker///docker", "empty component"],
    ["https://github.com/docker/docker", 'registry "https:" is not a valid host name'],
    ["-docker.io/docker/docker", 'registry "-docker.io" is not a valid host name'],
    ["[fc00::1]", "invalid image reference"],
    ["[fc00::1]:5000", "invalid image reference"],
    ["fc00::1:5000/debian", 'registry "fc00::1:5000" is not a valid host name'],
    ["[fe80::1%eth0]:5000/debian", 'registry "[fe80::1%eth0]:5000" is not a valid host name'],
    [
      `this_is_not_a_valid_namespace_because_its_length_is_greater_than_255_${"x".repeat(200)}/docker`,
      "repository name must not be more than 255 characters",
    ],
    ["busy box", 'repository path component "busy box"'],
  ];
  it.each(invalid)("%j: %s", (input, reason) => {
    let error: unknown;
    try {
      parseReference(input);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(InvalidReferenceError);
    const message = (error as InvalidReferenceError).message;
    expect(message).toContain(reason);
    expect(message.startsWith(`invalid image reference ${JSON.stringify(input)}`)).toBe(true);
    expect((error as InvalidReferenceError).code).toBe("E_INVALID_REFERENCE");
    expect((error as InvalidReferenceError).reference).toBe(input);
  });

  it("rejects absurdly long text quickly, quoting only its start", () => {
    const started = performance.now();
    expect(() => parseReference(`${"a-".repeat(50_000)}/x`)).toThrow(
      /^invalid image reference "(a-){150}…": it is 100002 characters long$/,
    );
    expect(() => parseReference(`${"a".repeat(3000)}.${"b-".repeat(500)}!/x`)).toThrow(InvalidReferenceError);
    expect(performance.now() - started).toBeLessThan(1000);
  });
});
