import { logLevel, type KafkaConfig } from 'kafkajs';
import type { Logger } from '../../observe/logger';
import { StartProblems } from '../secret';
import { checkKafkaConfig, parseBrokers, readKafkaFiles, type KafkaSinkConfig } from './config';
import { retrySettings } from './retry';

/**
 * The kafkajs client settings (brokers, SASL, TLS, timeouts, retry) from `sinks.kafka.*`: the sink's producer and
 * the relay's consumer use the same. Reads the SASL password file and the TLS files now, so a bad one stops the
 * process at start with a ConfigError (exit 78) naming the key (and the file, never the password).
 */
export function kafkaClientConfig(c: KafkaSinkConfig, logger: Logger): KafkaConfig {
  const start = new StartProblems('sinks.kafka');
  start.addAll(checkKafkaConfig(c));
  const { password, ...tls } = readKafkaFiles(c, start);
  start.throwIfAny();
  const kc: KafkaConfig = {
    clientId: c.client_id,
    brokers: parseBrokers(c.brokers),
    connectionTimeout: Math.min(10_000, c.request_timeout_ms),
    requestTimeout: c.request_timeout_ms,
    retry: retrySettings(c.retries),
    logLevel: logLevel.WARN,
    // kafkajs's own lines (reconnects, retries) go to debug: the lane logs each failure once
    logCreator: () => ({ namespace, level, log }) => {
      logger.debug(`kafka ${namespace}: ${String(log.message)}`, { sink: 'kafka', level });
    },
  };
  if (c.tls.enabled) {
    kc.ssl = {
      rejectUnauthorized: !c.tls.insecure_skip_verify,
      ...(tls.ca ? { ca: [tls.ca] } : {}),
      ...(tls.cert ? { cert: tls.cert } : {}),
      ...(tls.key ? { key: tls.key } : {}),
    };
  }
  if (c.sasl.mechanism !== 'none') {
    kc.sasl = { mechanism: c.sasl.mechanism, username: c.sasl.username, password: password ?? '' } as KafkaConfig['sasl'];
  }
  return kc;
}
