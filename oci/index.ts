export * from "./platform.js";
export * from "./reference.js";
export * from "./spec.js";
