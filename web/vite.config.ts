import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";

// The build output (dist/) is checked in and embedded in the hearth binary, so that
// `cargo run` serves the current app on a machine without Node.js; scripts/test rebuilds it
// and fails when the checked-in copy is stale.
export default defineConfig({
  plugins: [react()],
  base: "/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    sourcemap: false,
    reportCompressedSize: true,
  },
  test: {
    environment: "jsdom",
    globals: true,
    include: ["src/**/*.test.{ts,tsx}"],
  },
});
