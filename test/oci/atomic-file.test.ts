import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { replaceFile, writeFileAtomic } from "../../oci/atomic-file.js";
import { tempDirs } from "../helpers/temp.js";

const temp = tempDirs();

describe("a file replaced atomically", () => {
  it("holds the new content, and nothing else is left in its directory", async () => {
    const dir = temp("atomic");
    const file = path.join(dir, "index.json");
    writeFileSync(file, "old");
    await writeFileAtomic(file, "new", { durable: true });
    expect(readFileSync(file, "utf8")).toBe("new");
    expect(readdirSync(dir)).toEqual(["index.json"]);
  });

  it("keeps the old content, and leaves no temp file, when the write fails midway", async () => {
    const dir = temp("atomic-fail");
    const file = path.join(dir, "blob");
    writeFileSync(file, "old");
    const failing = replaceFile(file, async (tempFile) => {
      writeFileSync(tempFile, "half of it");
      throw new Error("the source broke");
    });
    await expect(failing).rejects.toThrow("the source broke");
    expect(readFileSync(file, "utf8")).toBe("old");
    expect(readdirSync(dir)).toEqual(["blob"]);
  });

  it("makes a missing directory when asked, and gives the file the mode asked for", async () => {
    const dir = temp("atomic-mode");
    const file = path.join(dir, "a", "b", "config.json");
    await writeFileAtomic(file, "{}", { makeDirectory: true, mode: 0o600 });
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it("writes its temp file in the directory named for it", async () => {
    const dir = temp("atomic-tempdir");
    const ingest = path.join(dir, "ingest");
    const file = path.join(dir, "record");
    let seen = "";
    await replaceFile(
      file,
      async (tempFile) => {
        seen = path.dirname(tempFile);
        writeFileSync(tempFile, "x");
      },
      { tempDir: ingest, makeDirectory: true },
    );
    expect(seen).toBe(ingest);
    expect(readdirSync(ingest)).toEqual([]);
  });
});
