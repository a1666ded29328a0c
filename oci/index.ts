export * from "./archive/index.js";
export * from "./image.js";
export * from "./layer.js";
export * from "./platform.js";
export * from "./reference.js";
export * from "./registry/index.js";
export * from "./spec.js";
export * from "./store/index.js";
