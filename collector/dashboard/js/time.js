// Times: the API speaks RFC 3339 UTC; people read and type local times.

/** `2026-11-25 03:00:00` in local time (or '-' for none). */
export function local(t) {
  if (!t) return '-';
  const d = t instanceof Date ? t : new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** How long ago `t` was, shortly: `12s`, `5m`, `3h`, `2d`. */
export function ago(t, now = Date.now()) {
  const secs = Math.max(0, Math.round((now - new Date(t).getTime()) / 1000));
  if (secs < 120) return `${secs}s`;
  if (secs < 7200) return `${Math.round(secs / 60)}m`;
  if (secs < 172800) return `${Math.round(secs / 3600)}h`;
  return `${Math.round(secs / 86400)}d`;
}

/**
 * What a person typed, as an RFC 3339 UTC time: `now` or empty (null),
 * an age (`-2h`, `-30m`, `-1d`), a local time (`2026-11-25 03:00[:00]`) or
 * an RFC 3339 time. Throws a message saying what is accepted.
 */
export function parse(text, now = Date.now()) {
  const t = (text || '').trim();
  if (t === '' || t === 'now') return null;
  const age = /^-(\d+)\s*([smhd])$/.exec(t);
  if (age) {
    const unit = { s: 1e3, m: 6e4, h: 36e5, d: 864e5 }[age[2]];
    return new Date(now - Number(age[1]) * unit).toISOString();
  }
  const localForm = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}(:\d{2}(\.\d+)?)?)$/.exec(t);
  const d = localForm ? new Date(`${localForm[1]}T${localForm[2]}`) : new Date(t);
  if (Number.isNaN(d.getTime())) {
    throw new Error(`"${t}" is not a time: write now, -2h, 2026-11-25 03:00 (local) or 2026-11-25T03:00:00Z`);
  }
  return d.toISOString();
}
