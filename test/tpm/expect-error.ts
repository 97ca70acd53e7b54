import { expect } from 'vitest';
import { AttestorError } from '../../src/errors.js';

/** Runs `fn` and asserts it throws an AttestorError of `type` with `code` (and that type's grpcCode). */
export function expectError(
  fn: () => unknown,
  type: abstract new (...args: never[]) => AttestorError,
  code: string,
  grpcCode: number,
): AttestorError {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(thrown, `expected ${type.name} ${code}`).toBeInstanceOf(type);
  const err = thrown as AttestorError;
  expect(err.code).toBe(code);
  expect(err.grpcCode).toBe(grpcCode);
  return err;
}
