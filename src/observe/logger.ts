import winston from 'winston';
import { escapeControl } from './escape';

export type Logger = winston.Logger;

/** Logs go to stderr so that stdout stays clean for `demo --json` and the console sink. */
export function createLogger(level = 'info', format: 'text' | 'json' = 'text'): Logger {
  const text = winston.format.printf(({ level: lvl, message, timestamp, ...meta }) => {
    const rest = Object.keys(meta).length ? ' ' + JSON.stringify(meta) : '';
    // messages quote comm and cgroup names: escaped, so none can forge a log line or drive the terminal
    return escapeControl(`${timestamp} ${lvl} ${message}${rest}`);
  });
  return winston.createLogger({
    level,
    format: winston.format.combine(
      winston.format.timestamp(),
      format === 'json' ? winston.format.json() : text,
    ),
    transports: [new winston.transports.Console({ stderrLevels: Object.keys(winston.config.npm.levels) })],
  });
}

/** A logger that discards everything, for unit tests. */
export function silentLogger(): Logger {
  return winston.createLogger({ silent: true, transports: [new winston.transports.Console({ silent: true })] });
}
