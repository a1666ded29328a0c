/**
 * The library's handle on a store: the directory of blobs, images, build cache and containers
 * that every command opens (`$TBUILD_ROOT`, else `$XDG_DATA_HOME/tbuild`, else
 * `~/.local/share/tbuild`). Pass it to build(), pull(), push() or run() to work in it.
 */
import {
  defaultStoreRoot,
  normalizeImageName,
  type Store as OpenedStore,
  openStore,
} from "../oci/store/index.js";

export interface StoredImage {
  /** The normalized name: `docker.io/library/busybox:latest`. */
  name: string;
  /** The manifest (or index) digest: the image ID. */
  digest: string;
}

export class Store {
  /** The store's directory. */
  readonly root: string;
  private readonly opened: OpenedStore;

  private constructor(opened: OpenedStore) {
    this.opened = opened;
    this.root = opened.root;
  }

  /** Opens the store at `root` (made on first use), or the one `env` (`process.env`) names. */
  static async open(options: { root?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Store> {
    return new Store(await openStore(options.root ?? defaultStoreRoot(options.env ?? process.env)));
  }

  /** Every named image, as `tbuild images` lists them. */
  async images(): Promise<StoredImage[]> {
    return (await this.opened.images.list()).map((record) => ({
      name: record.name,
      digest: record.descriptor.digest,
    }));
  }

  /** The image named `name`, or undefined. */
  async image(name: string): Promise<StoredImage | undefined> {
    const record = await this.opened.images.get(normalizeImageName(name));
    return record && { name: record.name, digest: record.descriptor.digest };
  }
}
