// A small emoji set for the picker and `:shortcode:` completion (names as most chat apps spell them).

export interface Emoji {
  name: string;
  emoji: string;
}

export const EMOJI: Emoji[] = [
  ["smile", "😄"], ["grin", "😁"], ["joy", "😂"], ["rofl", "🤣"], ["wink", "😉"], ["blush", "😊"],
  ["heart_eyes", "😍"], ["kissing_heart", "😘"], ["thinking", "🤔"], ["neutral_face", "😐"], ["smirk", "😏"], ["sweat_smile", "😅"],
  ["cry", "😢"], ["sob", "😭"], ["angry", "😠"], ["scream", "😱"], ["open_mouth", "😮"], ["sleeping", "😴"],
  ["sunglasses", "😎"], ["upside_down", "🙃"], ["hugs", "🤗"], ["shrug", "🤷"], ["facepalm", "🤦"], ["pray", "🙏"],
  ["thumbsup", "👍"], ["thumbsdown", "👎"], ["clap", "👏"], ["wave", "👋"], ["ok_hand", "👌"], ["muscle", "💪"],
  ["raised_hands", "🙌"], ["point_up", "☝️"], ["eyes", "👀"], ["heart", "❤️"], ["broken_heart", "💔"], ["sparkles", "✨"],
  ["fire", "🔥"], ["star", "⭐"], ["tada", "🎉"], ["rocket", "🚀"], ["100", "💯"], ["check", "✅"],
  ["x", "❌"], ["warning", "⚠️"], ["bulb", "💡"], ["coffee", "☕"], ["pizza", "🍕"], ["cake", "🍰"],
  ["beer", "🍺"], ["sun", "☀️"], ["rainbow", "🌈"], ["cat", "🐱"], ["dog", "🐶"], ["house", "🏠"],
].map(([name, emoji]) => ({ name, emoji }));

/**
 * Suggestions for a `:shortcode` being typed at the end of `before` (the text up to the caret):
 * the names starting with what was typed, then those containing it.
 */
export function completeShortcode(before: string, limit = 6): { from: number; matches: Emoji[] } | null {
  const m = /(^|\s):([a-z0-9_+-]{2,})$/.exec(before);
  if (!m) return null;
  const typed = m[2];
  const from = before.length - typed.length - 1;
  const starts = EMOJI.filter((e) => e.name.startsWith(typed));
  const contains = EMOJI.filter((e) => !e.name.startsWith(typed) && e.name.includes(typed));
  return { from, matches: [...starts, ...contains].slice(0, limit) };
}
