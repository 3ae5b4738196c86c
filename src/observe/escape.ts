/**
 * Control characters (C0, DEL, C1) as `\xNN`, the way the kernel's /dev/kmsg prints them. Any process
 * chooses its own comm and any tenant its cgroup names: printed raw, a `\n` forges a line and an ESC
 * sequence recolours or rewrites the reader's terminal. Backslashes are left alone so systemd's own
 * escapes (`\x2d` in unit names) read as they do everywhere else. For human-readable text only: JSON
 * output escapes these itself and must stay exact.
 */
export function escapeControl(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
