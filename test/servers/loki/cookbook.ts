/* The LogQL cookbook in docs/loki.md: each `### title` followed by a ```logql block. */
import fs from 'node:fs';
import path from 'node:path';

export const COOKBOOK = path.resolve(__dirname, '../../../../docs/loki.md');

export interface CookbookQuery {
  title: string;
  query: string;
}

export function readCookbook(file = COOKBOOK): CookbookQuery[] {
  const text = fs.readFileSync(file, 'utf8');
  const out: CookbookQuery[] = [];
  const re = /^### (.+)\n```logql\n([\s\S]*?)\n```/gm;
  for (let m = re.exec(text); m; m = re.exec(text)) out.push({ title: m[1]!.trim(), query: m[2]!.trim() });
  return out;
}
