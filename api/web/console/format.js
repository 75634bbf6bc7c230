// Formatting for people: dates, durations, JSON evidence.

/** `2026-12-03 10:20 UTC`, or an em dash for none. */
export function date(value) {
  if (!value) return '\u2014';
  const d = new Date(value);
  return `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

/** `5 min ago`, `in 2 h`, relative to now. */
export function relative(value) {
  if (!value) return '\u2014';
  const seconds = Math.round((new Date(value).getTime() - Date.now()) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 5) return 'just now';
  const [n, unit] = abs < 90 ? [abs, 's'] : abs < 5400 ? [Math.round(abs / 60), 'min']
    : abs < 129600 ? [Math.round(abs / 3600), 'h'] : [Math.round(abs / 86400), 'd'];
  return seconds < 0 ? `${n} ${unit} ago` : `in ${n} ${unit}`;
}

/** Pretty JSON for an evidence or diff block. */
export function json(value) {
  return value === null || value === undefined ? '' : JSON.stringify(value, null, 2);
}

/** `ACTIVATION_LIMIT_REACHED` -> `activation limit reached`. */
export function words(enumValue) {
  return enumValue ? enumValue.toLowerCase().replaceAll('_', ' ') : '';
}
