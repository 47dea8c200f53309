import { useId } from "react";
import type { SettingsProps } from "./App";
import { useT, type Lang } from "./i18n";

export type Theme = "system" | "light" | "dark";

export function Settings(props: SettingsProps & { onSignOut(): void }) {
  const t = useT();
  const ids = { theme: useId(), lang: useId(), title: useId() };
  return (
    <div className="page">
      <a href="#/" className="icon back" aria-label={t("back")}>
        ←
      </a>
      <section className="card" aria-labelledby={ids.title}>
        <h2 id={ids.title}>{t("settings")}</h2>
        <fieldset>
          <legend id={ids.theme}>{t("theme")}</legend>
          {(["system", "light", "dark"] as Theme[]).map((theme) => (
            <label key={theme} className="check">
              <input type="radio" name="theme" checked={props.theme === theme} onChange={() => props.setTheme(theme)} />
              {theme === "system" ? t("themeSystem") : theme === "light" ? t("themeLight") : t("themeDark")}
            </label>
          ))}
        </fieldset>
        <div className="field">
          <label htmlFor={ids.lang}>{t("language")}</label>
          <select id={ids.lang} value={props.lang} onChange={(e) => props.setLang(e.target.value as Lang | "auto")}>
            <option value="auto">{t("languageAuto")}</option>
            <option value="en" lang="en">
              English
            </option>
            <option value="vi" lang="vi">
              Tiếng Việt
            </option>
          </select>
        </div>
        <button type="button" className="danger" onClick={props.onSignOut}>
          {t("signOut")}
        </button>
      </section>
    </div>
  );
}
