// Type declarations for herald.js, the browser SDK of herald.

/** The connection's state, as told by `on('state', …)`. */
export type State = 'connecting' | 'connected' | 'disconnected';

/** The contract's error codes; `Error.code` of a rejected command. */
export type ErrorCode =
  | 'bad_request'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'too_large'
  | 'rate_limited'
  | 'unavailable'
  | 'internal';

/** An Error from herald: a refused command, or `unavailable` from the SDK itself. */
export interface HeraldError extends Error {
  code: ErrorCode | string;
}

/** A message of a channel, as pushed by the server or returned by history. */
export interface Message<T = unknown> {
  channel: string;
  /** Opaque, ordered within the channel; pass it back as `since` to resume. */
  offset: string;
  data: T;
  /** Only when the publisher gave one. */
  event?: string;
  /** The publisher's user id, where known. */
  user?: string;
  /** The publisher's client id, where known. */
  client?: string;
  /** The publisher's tags, when it gave some. */
  tags?: Record<string, string>;
  /** The publisher's conflation key, when it gave one. */
  key?: string;
}

/**
 * A filter on messages' tags (protocol v1.1): a message matches when its tags
 * do. The server refuses a malformed one with `bad_request`.
 */
export type Filter =
  | { tag: string; eq: string }
  | { tag: string; in: string[] }
  | { tag: string; exists: boolean }
  | { all: Filter[] }
  | { any: Filter[] }
  | { not: Filter };

/** How a client is connected: the JSON protocol, a raw WebSocket, or an SSE stream (which only reads). */
export type Transport = 'websocket' | 'raw' | 'sse';

/** One client subscribed to a channel. */
export interface PresenceClient {
  client: string;
  user: string;
  /** Left out by servers that do not say. */
  transport?: Transport;
  /** What the application said of the connection when it let it in (a connect proxy's `info`). */
  info?: unknown;
}

/** A join or leave push. */
export interface PresenceEvent {
  op: 'join' | 'leave';
  channel: string;
  client: string;
  user: string;
  /** Left out by servers that do not say. */
  transport?: Transport;
}

/** What a subscribe reply told: the channel's latest offset, and whether resuming lost nothing. */
export interface Subscribed {
  offset: string;
  recovered: boolean;
}

export interface HeraldOptions {
  /** A JWT, sent as `?token=`. */
  token?: string;
  /** Called before each connect and reconnect; its result is sent as `?token=`. */
  getToken?: () => string | undefined | Promise<string | undefined>;
  /** The WebSocket class to use [globalThis.WebSocket]; for tests and other runtimes. */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocket;
  /**
   * Milliseconds between keepalive pings while connected [25000]; a connection
   * that sends nothing for a whole interval is dropped and reconnected. 0 turns it off.
   */
  pingInterval?: number;
  /** 'sse': subscribe-only over one Server-Sent Events stream, where WebSocket is blocked. */
  transport?: 'ws' | 'sse';
  /** The fetch function of the SSE transport [globalThis.fetch]; for tests. */
  fetch?: typeof fetch;
}

export interface SubscribeOptions {
  /** Resume after this offset: its later messages that history holds come first. */
  since?: string;
  /** Only the messages whose tags match (live and catch-up). WebSocket only; not with `delta`. */
  filter?: Filter;
  /**
   * 'fossil': the server may send each message as a Fossil delta against the
   * previous one; the SDK applies it, so the handler gets whole data. A delta
   * that does not apply is never delivered: the subscription resubscribes after
   * the last message delivered. WebSocket only; not with `filter`.
   */
  delta?: 'fossil';
}

export interface HistoryOptions {
  limit?: number;
  since?: string;
  /** Only the messages whose tags match; `limit` then counts those. Not the subscription's filter unless given. */
  filter?: Filter;
}

export interface PublishOptions {
  /** The message's event name. */
  event?: string;
  /** Tags that subscribers' filters match: at most 16, each key and value at most 128 bytes. */
  tags?: Record<string, string>;
  /** A conflation key (at most 128 bytes): a slow subscriber in a conflating namespace may skip to the newest message of a key. */
  key?: string;
}

/**
 * The bytes a Fossil delta (fossil-scm's delta format, as herald's delta pushes
 * carry it) makes of base. Throws an Error, and returns nothing, when the delta
 * is malformed, reaches outside base, or its length or checksum does not match.
 */
export function applyDelta(base: Uint8Array, delta: Uint8Array): Uint8Array;

export type Unlisten = () => void;

/** One channel subscribed by `Herald.subscribe`, or by the server (`Herald.on('subscription', …)`). */
export class Subscription<T = unknown> {
  readonly channel: string;
  /**
   * The last offset seen on the channel: the last message's, or the subscribe
   * reply's when no message came yet. Reconnects resume from it.
   */
  readonly offset: string | undefined;
  /**
   * The last subscribe reply's `recovered`: false when history no longer reached
   * back to the offset asked for, so messages were missed. Undefined before the
   * first reply.
   */
  readonly recovered: boolean | undefined;
  /** Stops the subscription. */
  unsubscribe(): void;
  /** The channel's messages, oldest first (with a filter, only those that match it). */
  history(opts?: HistoryOptions): Promise<Message<T>[]>;
  /** The clients subscribed to the channel. */
  presence(): Promise<PresenceClient[]>;
  /**
   * After each subscribe reply (or `subscribed` push of a server-side
   * subscription): the first, and one per reconnect.
   */
  on(event: 'subscribed', fn: (r: Subscribed) => void): Unlisten;
  /** Each message, after the handler given to `subscribe` (if any): how a server-side subscription's messages are read. */
  on(event: 'message', fn: (data: T, message: Message<T>) => void): Unlisten;
  /** The server ended the subscription (the server API's unsubscribe); it is gone. */
  on(event: 'unsubscribed', fn: (e: { op: 'unsubscribed'; channel: string }) => void): Unlisten;
  /** A client joined or left, where the channel's namespace tells. */
  on(event: 'join' | 'leave', fn: (e: PresenceEvent) => void): Unlisten;
  /** The server refused the subscription; it is gone. */
  on(event: 'error', fn: (e: HeraldError) => void): Unlisten;
}

/** One connection to herald's /ws that reconnects by itself. */
export class Herald {
  /**
   * @param url the /ws endpoint; left out, `ws(s)://<location.host>/ws`.
   */
  constructor(url?: string, opts?: HeraldOptions);
  constructor(opts: HeraldOptions);
  readonly url: string;
  readonly state: State;
  /** This connection's client id, from the server's welcome; new on each reconnect. */
  readonly client: string;
  /** The user id of the token, '' for anonymous clients. */
  readonly user: string;
  /**
   * Subscribes to channel: handler gets each message once, in order, across
   * reconnects. Throws if channel is already subscribed. Where the channel's
   * namespace keeps receipts (the subscribe reply says `receipts: true`), each
   * message is acknowledged after handler returns (not when it throws): acks
   * are cumulative, one in flight at a time, naming the newest message handled.
   */
  subscribe<T = unknown>(
    channel: string,
    handler: (data: T, message: Message<T>) => void,
    opts?: SubscribeOptions,
  ): Subscription<T>;
  /**
   * Publishes data and resolves with its offset; rejects with a HeraldError.
   * While disconnected it waits for the connection.
   */
  publish(channel: string, data: unknown, opts?: PublishOptions): Promise<string>;
  /**
   * Asks the server's application (its RPC hook, or `--proxy-rpc`) and
   * resolves with the data it answered; rejects with a HeraldError
   * (`bad_request` where the server has no rpc). While disconnected it waits;
   * one in flight when the connection drops rejects with `unavailable`.
   */
  rpc<R = unknown>(method: string, data?: unknown): Promise<R>;
  on(event: 'state', fn: (state: State) => void): Unlisten;
  /**
   * A subscription the server made for this connection (a connect proxy's
   * channels), once, when it first appears; listen to its 'message' event
   * here, before its first message. It is resumed after reconnects, as the
   * client's own are.
   */
  on(event: 'subscription', fn: (sub: Subscription) => void): Unlisten;
  /**
   * The application disconnected this client (herald's server API; WebSocket
   * close code 4000, with its reason), once. The Herald does not reconnect: it
   * is closed as by `close()`, its state already `disconnected`; calls reject
   * with `unavailable`.
   */
  on(event: 'kicked', fn: (e: { code: 4000; reason: string }) => void): Unlisten;
  /** Errors that belong to no command: a bad frame, a failed getToken. */
  on(event: 'error', fn: (e: Error) => void): Unlisten;
  /** Closes the connection for good; what waits rejects with `unavailable`. */
  close(): void;
}

export default Herald;
