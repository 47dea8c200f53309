import { describe, expect, it } from "vitest";
import { completeShortcode } from "./emoji";
import { browserLang, catalogs, translator } from "./i18n";
import { backoff } from "./live";
import { pickFlow } from "./matrix";

describe("translations", () => {
  it("has every English message in Vietnamese, with the same placeholders", () => {
    const holes = (s: string) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();
    for (const [key, text] of Object.entries(catalogs.en)) {
      const vi = (catalogs.vi as Record<string, string>)[key];
      expect(vi, key).toBeTruthy();
      expect(holes(vi), key).toEqual(holes(text));
    }
  });

  it("follows the browser's first language it has", () => {
    expect(browserLang(["vi-VN", "en"])).toBe("vi");
    expect(browserLang(["fr-FR", "en-GB"])).toBe("en");
    expect(browserLang(["de"])).toBe("en");
    expect(translator("vi")("welcome", { name: "An" })).toBe("Chào An");
  });
});

describe("shortcodes", () => {
  it("completes a :shortcode being typed, prefixes first", () => {
    const c = completeShortcode("nice :th");
    expect(c?.from).toBe(5);
    expect(c?.matches[0].emoji).toBe("🤔");
    expect(c?.matches.map((m) => m.name)).toContain("thumbsup");
    expect(completeShortcode("time 10:30")).toBeNull();
    expect(completeShortcode("a :x")).toBeNull();
  });
});

describe("reconnection backoff", () => {
  it("doubles from about a second up to about thirty", () => {
    expect(backoff(0, () => 0.5)).toBe(1000);
    expect(backoff(3, () => 0.5)).toBe(8000);
    expect(backoff(20, () => 0.5)).toBe(30_000);
    expect(backoff(20, () => 1)).toBeLessThanOrEqual(37_500);
  });
});

describe("registration flows", () => {
  it("takes a flow it can finish, preferring one without a token", () => {
    const flows = [{ stages: ["m.login.registration_token", "m.login.dummy"] }, { stages: ["m.login.dummy"] }];
    expect(pickFlow(flows, false)).toEqual(["m.login.dummy"]);
    expect(pickFlow([flows[0]], true)).toEqual(["m.login.registration_token", "m.login.dummy"]);
    expect(pickFlow([flows[0]], false)).toBeNull();
    expect(pickFlow([{ stages: ["m.login.recaptcha"] }], true)).toBeNull();
  });
});
