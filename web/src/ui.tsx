import { useEffect, useState } from "react";
import type { Client } from "./matrix";

/** An image from authenticated media (fetched with the access token, shown as a blob URL). */
export function AuthImage(props: { client: Client; mxc: string; width: number; height: number; alt: string; className?: string }) {
  const { client, mxc, width, height } = props;
  const [url, setUrl] = useState<string | null>(null);
  useEffect(() => {
    let current = true;
    let made: string | null = null;
    client.media(mxc, { width, height }).then(
      (blob) => {
        if (!current) return;
        made = URL.createObjectURL(blob);
        setUrl(made);
      },
      () => current && setUrl(null),
    );
    return () => {
      current = false;
      if (made) URL.revokeObjectURL(made);
    };
  }, [client, mxc, width, height]);
  if (!url) return <span className={`img-placeholder ${props.className ?? ""}`} style={{ width, height }} aria-label={props.alt} role="img" />;
  return <img src={url} alt={props.alt} className={props.className} />;
}

function hue(s: string): number {
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) % 360;
  return h;
}

export function Avatar(props: { client: Client; id: string; name: string; mxc?: unknown; size?: number }) {
  const size = props.size ?? 32;
  if (typeof props.mxc === "string" && props.mxc.startsWith("mxc://")) {
    return <AuthImage client={props.client} mxc={props.mxc} width={size} height={size} alt="" className="avatar" />;
  }
  const letter = (props.name.replace(/^[@#!]/, "")[0] ?? "?").toUpperCase();
  return (
    <span className="avatar" aria-hidden="true" style={{ width: size, height: size, background: `hsl(${hue(props.id)} 45% 42%)` }}>
      {letter}
    </span>
  );
}

export function formatTime(ts: number, lang: string): string {
  return new Date(ts).toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit" });
}
