// Numbers, sizes, times and payloads as people read them.

export function count(n) {
  if (n === null || n === undefined) return '–';
  return Number(n).toLocaleString('en-US');
}

export function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = Number(n);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function rate(perSecond) {
  if (perSecond === null || perSecond === undefined || !Number.isFinite(perSecond)) return '–';
  return `${perSecond < 10 ? perSecond.toFixed(1) : Math.round(perSecond).toLocaleString('en-US')}/s`;
}

export function time(rfc3339) {
  if (!rfc3339) return '–';
  const d = new Date(rfc3339);
  return Number.isNaN(d.getTime()) ? String(rfc3339) : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

export function ms(n) {
  if (n === null || n === undefined) return '–';
  if (n % 86400000 === 0) return `${n / 86400000} d`;
  if (n % 3600000 === 0) return `${n / 3600000} h`;
  if (n % 60000 === 0) return `${n / 60000} min`;
  if (n % 1000 === 0) return `${n / 1000} s`;
  return `${n} ms`;
}

export function base64ToBytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i += 1) out[i] = bin.charCodeAt(i);
  return out;
}

/** A hex dump: offset, 16 bytes in hex, and their printable ASCII. */
export function hexdump(data, max = 4096) {
  const lines = [];
  const n = Math.min(data.length, max);
  for (let i = 0; i < n; i += 16) {
    const row = data.subarray(i, Math.min(i + 16, n));
    const hex = Array.from(row, (b) => b.toString(16).padStart(2, '0')).join(' ');
    const ascii = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    lines.push(`${i.toString(16).padStart(8, '0')}  ${hex.padEnd(47)}  ${ascii}`);
  }
  if (data.length > max) lines.push(`… ${data.length - max} more bytes`);
  return lines.join('\n');
}

/** How a message's payload reads: pretty JSON, text as is, anything else as base64 (hex on request). */
export function payloadText(message, binaryAs = 'hex') {
  if (Object.prototype.hasOwnProperty.call(message, 'payload') && message.payload !== undefined) {
    return typeof message.payload === 'string' ? message.payload : JSON.stringify(message.payload, null, 2);
  }
  if (typeof message.payload_base64 === 'string') {
    return binaryAs === 'base64' ? message.payload_base64 : hexdump(base64ToBytes(message.payload_base64));
  }
  return '';
}

export function isBinary(message) {
  return typeof message.payload_base64 === 'string' && message.payload === undefined;
}

/** "name: value" lines (blank ones skipped) to `{name: value}`; a line without a name and a colon is an error naming it. */
export function headerLines(text) {
  const headers = {};
  for (const line of text.split('\n').map((l) => l.trim()).filter(Boolean)) {
    const i = line.indexOf(':');
    if (i <= 0) throw new Error(`header line "${line}" is not "name: value"`);
    headers[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return headers;
}
