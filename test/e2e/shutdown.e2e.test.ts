/*
 * The stop of the real agent process with a sink that cannot be reached: the real Kafka client against a
 * broker address where nothing listens (127.0.0.1:9, discard, closed here). The stop ends within its deadline
 * with exit 0, and its last line says what is true.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { sleep, startAgent, type RunningAgent } from '../helpers/agent';

describe('shutdown e2e: a sink unreachable at stop', () => {
  const agents: RunningAgent[] = [];
  after(async () => {
    for (const a of agents) if (a.child.exitCode === null && a.child.signalCode === null) await a.stop('SIGKILL').catch(() => undefined);
  });

  test('Kafka unreachable: exit 0 within the deadline, never "still running past the deadline"', async (t) => {
    const DEADLINE = 4000;
    // kafka through the env: the file's sinks block is the helper's
    const agent = await startAgent(
      '',
      { OOMTRAIL_SINKS_KAFKA_ENABLED: 'true', OOMTRAIL_SINKS_KAFKA_BROKERS: '127.0.0.1:9', OOMTRAIL_SHUTDOWN_DEADLINE_MS: String(DEADLINE) },
      {},
    );
    agents.push(agent);
    await sleep(1500); // the client is retrying its connection by now
    const stopped = await agent.stop('SIGTERM');
    assert.equal(stopped.code, 0, `exit ${stopped.code ?? stopped.signal}:\n${agent.stderr().slice(-2000)}`);
    assert.ok(stopped.ms < DEADLINE + 500, `the stop took ${stopped.ms} ms for a ${DEADLINE} ms deadline`);
    assert.doesNotMatch(agent.stderr(), /past the .* shutdown deadline/);
    assert.match(agent.stderr(), /stopped; every record delivered/);
    t.diagnostic(`kafka at 127.0.0.1:9: stop ${stopped.ms} ms (deadline ${DEADLINE}), exit ${stopped.code}`);
  });
});
