'use strict';

// Every error this package creates carries a string `code`; this file makes them all.

function coded(Ctor, code, message, extra) {
  const err = new Ctor(message);
  err.code = code;
  if (extra !== undefined) Object.assign(err, extra);
  return err;
}

/** A short, never-throwing description of any value, for error messages. */
function describe(value) {
  switch (typeof value) {
    case 'string':
      return value.length > 60 ? JSON.stringify(value.slice(0, 57) + '...') : JSON.stringify(value);
    case 'number':
      return Object.is(value, -0) ? '-0' : String(value);
    case 'bigint':
      return `${value}n`;
    case 'symbol':
      return value.toString();
    case 'function':
      return `function ${value.name || '(anonymous)'}`;
    case 'undefined':
      return 'undefined';
    case 'boolean':
      return String(value);
    default:
      if (value === null) return 'null';
      try {
        if (Array.isArray(value)) return `an array of length ${value.length}`;
        const tag = Object.prototype.toString.call(value);
        if (tag === '[object Object]') return 'an object';
        if (value instanceof Date && Number.isNaN(value.getTime())) return 'an invalid Date';
        const name = tag.slice(8, -1);
        return `${/^[AEIO]/.test(name) ? 'an' : 'a'} ${name}`;
      } catch {
        return 'an object';
      }
  }
}

/**
 * The message of anything thrown or rejected: Errors keep theirs, other values are described.
 * Never throws: a revoked Proxy or a throwing getter is described instead of read.
 */
function messageOf(reason) {
  if (typeof reason === 'string') return reason;
  if (reason !== null && typeof reason === 'object') {
    try {
      const message = reason.message;
      if (typeof message === 'string') return message;
      if (reason instanceof Error) return String(message);
    } catch {
      return `Unreadable error: ${describe(reason)}`;
    }
  }
  return `Non-error rejection: ${describe(reason)}`;
}

/** The `code` of an error value, when it has a string one (never throws, like messageOf). */
function codeOf(err) {
  if (err === null || typeof err !== 'object') return undefined;
  try {
    const code = err.code;
    return typeof code === 'string' ? code : undefined;
  } catch {
    return undefined;
  }
}

/** Whether `value` is an Error (false for a revoked Proxy, where `instanceof` throws). */
function isError(value) {
  try {
    return value instanceof Error;
  } catch {
    return false;
  }
}

const typeError = (message) => coded(TypeError, 'ERR_INVALID_ARG', message);
const rangeError = (message) => coded(RangeError, 'ERR_INVALID_ARG', message);

const closedError = () =>
  coded(Error, 'ERR_EXECUTOR_SHUT_DOWN', 'The executor has been shut down; no new executions are accepted');

function cancelledError(executionId, agent, cause) {
  const err = coded(Error, 'ERR_EXECUTION_CANCELLED', `Execution ${executionId} (${agent}) was cancelled`, {
    executionId,
    agent,
  });
  if (cause !== undefined) err.cause = cause;
  return err;
}

const shutdownError = (executionId, agent) =>
  coded(Error, 'ERR_EXECUTOR_SHUT_DOWN', `Execution ${executionId} (${agent}) was cancelled by shutdown`, {
    executionId,
    agent,
  });

const timeoutError = (executionId, agent, timeoutMs, attempt) =>
  coded(Error, 'ERR_EXECUTION_TIMEOUT', `Execution ${executionId} (${agent}) timed out after ${timeoutMs} ms`, {
    executionId,
    agent,
    timeoutMs,
    attempt,
  });

const agentNotFound = (agent) =>
  coded(Error, 'ERR_AGENT_NOT_FOUND', `No agent registered for ${JSON.stringify(agent)}`, { agent });

module.exports = {
  coded,
  describe,
  messageOf,
  codeOf,
  isError,
  typeError,
  rangeError,
  closedError,
  cancelledError,
  shutdownError,
  timeoutError,
  agentNotFound,
};
