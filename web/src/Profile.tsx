import { useContext, useEffect, useId, useState, type FormEvent } from "react";
import { useApp } from "./App";
import { describeError, Field } from "./Auth";
import { I18n, useT } from "./i18n";
import { AuthImage } from "./ui";

type Device = { device_id: string; display_name?: string; last_seen_ts?: number; last_seen_ip?: string };

export function Profile() {
  const t = useT();
  const { lang } = useContext(I18n);
  const app = useApp();
  const client = app.client;
  const [name, setName] = useState("");
  const [avatar, setAvatar] = useState<string | undefined>();
  const [preview, setPreview] = useState<{ file: File; url: string } | null>(null);
  const [progress, setProgress] = useState<number | null>(null);
  const [note, setNote] = useState("");
  const [error, setError] = useState("");
  const [devices, setDevices] = useState<Device[]>([]);
  const [confirmPassword, setConfirmPassword] = useState("");
  const [devicesError, setDevicesError] = useState("");
  const [oldPassword, setOldPassword] = useState("");
  const [newPassword, setNewPassword] = useState("");
  const [passwordNote, setPasswordNote] = useState("");
  const ids = { avatar: useId(), profile: useId(), devices: useId(), password: useId() };

  useEffect(() => {
    client.profile(client.userId).then(
      (p) => {
        setName(p.displayname ?? "");
        setAvatar(p.avatar_url);
      },
      () => undefined,
    );
    client.devices().then(
      (d) => setDevices(d.devices ?? []),
      () => undefined,
    );
  }, [client]);

  useEffect(
    () => () => {
      if (preview) URL.revokeObjectURL(preview.url);
    },
    [preview],
  );

  const saveProfile = async (e: FormEvent) => {
    e.preventDefault();
    setNote("");
    setError("");
    try {
      await client.setDisplayName(name.trim());
      if (preview) {
        setProgress(0);
        const uri = await client.upload(preview.file, preview.file.name, setProgress);
        await client.setAvatarUrl(uri);
        setAvatar(uri);
        setPreview(null);
        setProgress(null);
      }
      setNote(t("saved"));
    } catch (err) {
      setProgress(null);
      setError(describeError(t, err));
    }
  };

  const signOutOthers = async (e: FormEvent) => {
    e.preventDefault();
    setDevicesError("");
    const others = devices.filter((d) => d.device_id !== client.session.deviceId).map((d) => d.device_id);
    try {
      await client.deleteDevices(others, confirmPassword);
      setConfirmPassword("");
      setDevices((await client.devices()).devices ?? []);
    } catch (err) {
      setDevicesError(describeError(t, err, "login"));
    }
  };

  const changePassword = async (e: FormEvent) => {
    e.preventDefault();
    setPasswordNote("");
    try {
      await client.changePassword(oldPassword, newPassword);
      setOldPassword("");
      setNewPassword("");
      setPasswordNote(t("passwordChanged"));
    } catch (err) {
      setPasswordNote(describeError(t, err, "login"));
    }
  };

  return (
    <div className="page">
      <a href="#/" className="icon back" aria-label={t("back")}>
        ←
      </a>
      <section className="card" aria-labelledby={ids.profile}>
        <h2 id={ids.profile}>{t("profile")}</h2>
        <p className="muted">{client.userId}</p>
        <form onSubmit={saveProfile}>
          <div className="avatar-edit">
            {preview ? (
              <img src={preview.url} alt={t("avatarPreview")} className="avatar-large" />
            ) : avatar ? (
              <AuthImage client={client} mxc={avatar} width={96} height={96} alt={t("avatar")} className="avatar-large" />
            ) : (
              <span className="avatar-large placeholder" aria-hidden="true">
                {(name || client.userId.slice(1))[0]?.toUpperCase()}
              </span>
            )}
            <div className="field">
              <label htmlFor={ids.avatar}>{t("chooseAvatar")}</label>
              <input
                id={ids.avatar}
                type="file"
                accept="image/*"
                onChange={(e) => {
                  const file = e.target.files?.[0];
                  if (file) setPreview({ file, url: URL.createObjectURL(file) });
                }}
              />
            </div>
          </div>
          {progress !== null && <progress value={progress} max={1} aria-label={t("uploading", { name: preview?.file.name ?? "" })} />}
          <Field label={t("displayName")} value={name} onChange={setName} required={false} />
          {note && <p role="status">{note}</p>}
          {error && (
            <p className="error" role="alert">
              {error}
            </p>
          )}
          <button type="submit" className="primary">
            {t("save")}
          </button>
        </form>
      </section>
      <section className="card" aria-labelledby={ids.devices}>
        <h2 id={ids.devices}>{t("devices")}</h2>
        <ul className="devices">
          {devices.map((d) => (
            <li key={d.device_id}>
              <strong>{d.display_name ?? d.device_id}</strong> <span className="muted">{d.device_id}</span>
              {d.device_id === client.session.deviceId ? (
                <span className="badge-text">{t("thisDevice")}</span>
              ) : (
                d.last_seen_ts && <span className="muted"> · {t("lastSeen", { when: new Date(d.last_seen_ts).toLocaleString(lang) })}</span>
              )}
            </li>
          ))}
        </ul>
        {devices.length > 1 && (
          <form onSubmit={signOutOthers}>
            <Field label={t("passwordToConfirm")} type="password" autoComplete="current-password" value={confirmPassword} onChange={setConfirmPassword} />
            {devicesError && (
              <p className="error" role="alert">
                {devicesError}
              </p>
            )}
            <button type="submit" className="danger">
              {t("signOutOthers")}
            </button>
          </form>
        )}
      </section>
      <section className="card" aria-labelledby={ids.password}>
        <h2 id={ids.password}>{t("changePassword")}</h2>
        <form onSubmit={changePassword}>
          <Field label={t("currentPassword")} type="password" autoComplete="current-password" value={oldPassword} onChange={setOldPassword} />
          <Field label={t("newPassword")} type="password" autoComplete="new-password" value={newPassword} onChange={setNewPassword} />
          {passwordNote && <p role="status">{passwordNote}</p>}
          <button type="submit" className="primary">
            {t("changePassword")}
          </button>
        </form>
      </section>
    </div>
  );
}
