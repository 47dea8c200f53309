import { act, fireEvent, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { Auth } from "./Auth";
import { I18n, translator } from "./i18n";

function answer(status: number, body: unknown) {
  return Promise.resolve(new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } }));
}

/** A stand-in for the server's answers, by method and path. */
function serve(routes: Record<string, (url: URL, init?: RequestInit) => Promise<Response>>) {
  vi.stubGlobal("fetch", (input: string | URL, init?: RequestInit) => {
    const url = new URL(String(input), "http://localhost");
    const route = routes[`${init?.method ?? "GET"} ${url.pathname}`];
    return route ? route(url, init) : answer(404, { errcode: "M_UNRECOGNIZED", error: "no" });
  });
}

afterEach(() => {
  vi.unstubAllGlobals();
  vi.useRealTimers();
});

describe("sign in", () => {
  it("says in words that the password is wrong, and offers each SSO provider", async () => {
    serve({
      "GET /_matrix/client/v3/login": () =>
        answer(200, { flows: [{ type: "m.login.password" }, { type: "m.login.sso", identity_providers: [{ id: "github", name: "GitHub" }] }] }),
      "POST /_matrix/client/v3/login": () => answer(403, { errcode: "M_FORBIDDEN", error: "Invalid password" }),
    });
    render(
      <I18n.Provider value={{ lang: "en", t: translator("en") }}>
        <Auth onSession={() => undefined} />
      </I18n.Provider>,
    );
    expect(await screen.findByRole("link", { name: "Continue with GitHub" })).toBeTruthy();
    fireEvent.change(screen.getByLabelText("Username"), { target: { value: "alice" } });
    fireEvent.change(screen.getByLabelText("Password"), { target: { value: "nope" } });
    fireEvent.click(screen.getByRole("button", { name: "Sign in" }));
    expect((await screen.findByRole("alert")).textContent).toBe("Wrong username or password.");
  });
});

describe("register", () => {
  it("checks availability while typing and asks for a token when the server needs one", async () => {
    serve({
      "GET /_matrix/client/v3/login": () => answer(200, { flows: [{ type: "m.login.password" }] }),
      "POST /_matrix/client/v3/register": () => answer(401, { session: "s", flows: [{ stages: ["m.login.registration_token"] }] }),
      "GET /_matrix/client/v3/register/available": (url) =>
        url.searchParams.get("username") === "taken"
          ? answer(400, { errcode: "M_USER_IN_USE", error: "in use" })
          : answer(200, { available: true }),
    });
    render(
      <I18n.Provider value={{ lang: "vi", t: translator("vi") }}>
        <Auth onSession={() => undefined} />
      </I18n.Provider>,
    );
    fireEvent.click(screen.getByRole("button", { name: "Tạo tài khoản" }));
    expect(await screen.findByLabelText("Mã đăng ký")).toBeTruthy();
    fireEvent.change(screen.getByLabelText("Tên người dùng"), { target: { value: "taken" } });
    expect(await screen.findByText("taken đã có người dùng", {}, { timeout: 2000 })).toBeTruthy();
    fireEvent.change(screen.getByLabelText("Tên người dùng"), { target: { value: "free" } });
    expect(await screen.findByText("free chưa có ai dùng", {}, { timeout: 2000 })).toBeTruthy();
    await act(async () => undefined);
  });
});
