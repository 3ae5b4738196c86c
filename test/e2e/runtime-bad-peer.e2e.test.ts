/*
 * A containerd socket that answers badly (a FAULT stand-in: node:http2 speaking containerd's method paths, or a raw
 * unix server; a real containerd cannot be made to do this): a grpc-message trailer with a malformed % escape,
 * a 100 MB reply, garbage instead of HTTP/2. For each, the agent keeps running, warns once, and a real OOM kill
 * in a containerd-shaped cgroup is recorded without names within the lookup bound.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { makeNestedTestCgroup, removeCgroup, spawnDdHog } from '../helpers/cgroup';
import { startAgent, sleep, type RunningAgent } from '../helpers/agent';

type Peer = { socket: string; close: () => void };

function grpcPeer(socket: string, answer: (s: http2.ServerHttp2Stream) => void): net.Server {
  const server = http2.createServer();
  server.on('stream', (s, h) => {
    s.on('error', () => undefined);
    s.resume();
    if (String(h[':path']).endsWith('/Subscribe')) return void s.respond({ ':status': 200, 'content-type': 'application/grpc' });
    answer(s);
  });
  server.on('session', (sess) => sess.on('error', () => undefined));
  server.listen(socket);
  return server as unknown as net.Server;
}

function grpcReply(s: http2.ServerHttp2Stream, body: Buffer, trailers: Record<string, string>): void {
  s.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
  s.on('wantTrailers', () => s.sendTrailers(trailers));
  s.end(body);
}

const HUGE = Buffer.alloc((100 << 20) + 5);
HUGE.writeUInt32BE(100 << 20, 1);

const PEERS: Record<string, (socket: string) => Peer> = {
  'a malformed grpc-message trailer': (socket) => {
    const srv = grpcPeer(socket, (s) => grpcReply(s, Buffer.alloc(0), { 'grpc-status': '13', 'grpc-message': 'bad %E0%A4%A escape %' }));
    return { socket, close: () => srv.close() };
  },
  'a 100 MB reply': (socket) => {
    const srv = grpcPeer(socket, (s) => grpcReply(s, HUGE, { 'grpc-status': '0' }));
    return { socket, close: () => srv.close() };
  },
  'garbage instead of HTTP/2': (socket) => {
    const srv = net.createServer((c) => {
      c.on('error', () => undefined);
      c.end(Buffer.from('\x00\xff\x13 not http/2 at all \r\n'.repeat(100)));
    });
    srv.listen(socket);
    return { socket, close: () => srv.close() };
  },
};

describe('a containerd socket that answers badly', { timeout: 240_000 }, () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await removeCgroup(d);
  });

  for (const [what, make] of Object.entries(PEERS)) {
    test(`${what}: the agent keeps running, warns once, the kill's record arrives without names`, async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-badpeer-'));
      const peer = make(path.join(dir, 'containerd.sock'));
      await sleep(50);
      let agent: RunningAgent;
      try {
        agent = await startAgent(
          ['enrich:', '  runtime:', '    runtimes: containerd', `    containerd_socket: ${JSON.stringify(peer.socket)}`, '    request_timeout_ms: 1500', '    lookup_timeout_ms: 300'].join('\n'),
        );
      } catch (e) {
        peer.close();
        throw e;
      }
      try {
        const id = crypto.randomBytes(32).toString('hex');
        const cg = makeNestedTestCgroup([`oomtrail-badpeer-${process.pid}-${dirs.length}`, `cri-containerd-${id}.scope`]);
        dirs.push(...cg.dirs);
        const hog = await spawnDdHog(cg.procs);
        assert.equal(hog.signal, 'SIGKILL');
        const rs = await agent.waitFor((r) => r.some((x) => x.victim_pid === hog.pid), 15_000, 'the record');
        const r = rs.find((x) => x.victim_pid === hog.pid)!;
        assert.equal(r.container_id, id);
        assert.equal(r.container_runtime, 'containerd');
        assert.equal(r.container_name, undefined);
        assert.equal(r.container_image, undefined);
        assert.equal(r.pod_name, undefined);
        // the failed list is retried meanwhile (0.5 s, 1 s, 2 s…): still running, still one warning
        await sleep(2000);
        assert.equal(agent.child.exitCode, null, `the agent still runs:\n${agent.stderr().slice(-2000)}`);
        const warnings = agent.stderr().match(/runtime containerd: .* does not answer/g) ?? [];
        assert.equal(warnings.length, 1, agent.stderr().slice(-2000));
        assert.doesNotMatch(agent.stderr(), /URIError|uncaught|ENHANCE_YOUR_CALM/i);
        // a reply is refused at its length prefix, never buffered: the agent's peak RSS stays far below 100 MB more
        const hwmMb = Number(/VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${agent.child.pid}/status`, 'utf8'))![1]) / 1024;
        console.log(`# ${what}: agent peak RSS ${hwmMb.toFixed(0)} MiB`);
        assert.ok(hwmMb < 200, `peak RSS ${hwmMb} MiB`);
        console.log(`# ${what}: record without names; ${agent.stderr().match(/runtime containerd: [^\n]*/)![0].slice(0, 200)}`);
      } finally {
        await agent.stop();
        peer.close();
      }
    });
  }
});
