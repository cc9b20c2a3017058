"""The SMTP rate limit for bulk mail, shared by every worker process and host through Redis.

Every mail server has its bucket: the installation's (`EMAIL_*`), and each municipality's own server.
A GCRA token bucket paces a server's bulk sends evenly at its rate per minute × (1 −
`SMTP_TRANSACTIONAL_SHARE`) (no bursts), and a per-hour counter caps them at the same share of its rate
per hour; the share left belongs to transactional emails (verification, welcome…), which never wait and
never touch Redis for it. Exceeding the limit delays a send, it never fails or drops it. The clock is
Redis's (`TIME`), so hosts with drifting clocks agree. A 421/451 ("slow down") from a server halves its
bulk rate for `SLOWDOWN_SECONDS` (`slow_down`); several in a row halve it again, down to 1/16.

- The installation's server: the bulk queue's slots take a turn before they take each job
  (`wait_for_turn`, `jobs.runtime.slot_loop`), so a job over the limit waits in its queue (no timeout,
  no retry) for as long as it takes.
- A municipality's own server: its newsletters wait aside (the `bulk-own` queue's waiting sets, one per
  municipality, the layout of rq's rate limits: `jobs.enqueue.unique`), and `promote` moves each to the
  queue when its server's bucket gives it a turn; the queue's slots run what it holds without taking a
  turn, and set aside again a job that arrives without one (a retry: `had_turn`). So each own server
  sends at its own pace (`server_limits`, written by the domain), takes nothing of the installation's
  turns, and one server's hourly cap holds back its jobs alone.
"""

import time

from django.conf import settings
from rq.queue import Queue

from jobs import rq_compat
from jobs.config import tenancy
from jobs.enqueue import clients

SLOWDOWN_SECONDS = 600
MAX_SLOWDOWN = 16
MAX_WAIT = 5.0  # seconds slept at once between two looks at the bucket
PROMOTE_AT_ONCE = 100  # jobs `promote` moves in one script at most (a server without a limit: all at once)

# A Lua function: its keys are the server's pacing (TAT, ms), the hour's count (a hash: `hour` and `used`),
# slowdown factor; then its interval (ms) and hour cap. Returns 0 when the send may go now (and counts it), else the milliseconds to wait.
# The hour is named from Redis's TIME, here, so every host counts in the same one.
_TAKE_FUNCTION = """
local function take(tat_key, hour_key, slowdown_key, interval, cap)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  interval = interval * tonumber(redis.call('GET', slowdown_key) or '1')
  local tat = tonumber(redis.call('GET', tat_key) or '0')
  if tat < now then tat = now end
  if interval > 0 and tat > now then return math.ceil(tat - now) end
  if cap > 0 then
    local hour = math.floor(now / 3600000)
    local counted = redis.call('HMGET', hour_key, 'hour', 'used')
    local used = 0
    if tonumber(counted[1]) == hour then used = tonumber(counted[2]) end
    if used >= cap then return 3600000 - (now % 3600000) end
    redis.call('HSET', hour_key, 'hour', hour, 'used', used + 1)
    redis.call('PEXPIRE', hour_key, 3600000 - (now % 3600000) + 60000)
  end
  if interval > 0 then redis.call('SET', tat_key, tat + interval, 'PX', math.ceil(tat + interval - now) + 60000) end
  return 0
end
"""
# ARGV: interval ms, hour cap.
_TAKE = _TAKE_FUNCTION + "return take(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[1]), tonumber(ARGV[2]))"

# KEYS: rq's set of rate-limit keys. ARGV: the paced queue's key start (`tenancy.cap_key(queue, "")`, the
# municipality's id follows), the start of a server's keys here, of rq's queue and job keys, the
# `enqueued_at` to write, a server's limits when none were written (the installation's), the most
# jobs to move. For each municipality with jobs waiting aside, oldest first: a stale entry (a job deleted,
# canceled) is dropped; a live one takes its server's turn and, if it gets it, goes to its queue, marked as
# having had its turn (`had_turn`). Returns 0 if it moved some, else the ms to the next turn (-1: nothing waits).
_PROMOTE = (
    _TAKE_FUNCTION
    + rq_compat.JOB_LAYOUT_LUA
    + """
local soonest, moved = -1, 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if string.sub(key, 1, #ARGV[1]) == ARGV[1] then
    local waiting = waiting_set(key)
    local server = ARGV[2] .. string.sub(key, #ARGV[1] + 1)
    local limits = redis.call('HMGET', server .. ':limits', 'interval', 'cap')
    local interval, cap = tonumber(limits[1] or ARGV[6]), tonumber(limits[2] or ARGV[7])
    while true do
      if moved >= tonumber(ARGV[8]) then return 0 end
      local head = redis.call('ZRANGE', waiting, 0, 0)
      if #head == 0 then break end
      local job_key = ARGV[4] .. head[1]
      local origin = held_back_origin(job_key)
      if origin then
        local wait = take(server .. ':tat', server .. ':hour', server .. ':slowdown', interval, cap)
        if wait > 0 then
          if soonest < 0 or wait < soonest then soonest = wait end
          break
        end
        move_to_queue(job_key, head[1], ARGV[3] .. origin, ARGV[5])
        redis.call('HSET', job_key, 'turn', '1')
        moved = moved + 1
      end
      redis.call('ZREM', waiting, head[1])
    end
  end
end
if moved > 0 then return 0 end
return soonest
"""
)


def _prefix(municipality: int | None = None) -> str:
    """Where a server's keys start: the installation's, or municipality `municipality`'s own."""
    own = "" if municipality is None else f":m{municipality}"
    return f"{settings.RQ_KEY_PREFIX}:smtp{own}"


def _keys(municipality: int | None = None) -> list[str]:
    prefix = _prefix(municipality)
    return [f"{prefix}:tat", f"{prefix}:hour", f"{prefix}:slowdown"]


def bulk_limits(per_minute: float | None = None, per_hour: int | None = None) -> tuple[float, int]:
    """(milliseconds between two bulk sends, bulk sends per hour) of a server sending `per_minute` and
    `per_hour` emails (None: the installation's `SMTP_RATE_*`); 0 means no limit."""
    per_minute = settings.SMTP_RATE_PER_MINUTE if per_minute is None else per_minute
    per_hour = settings.SMTP_RATE_PER_HOUR if per_hour is None else per_hour
    share = 1 - settings.SMTP_TRANSACTIONAL_SHARE
    per_minute, per_hour = per_minute * share, int(per_hour * share)
    return (60_000 / per_minute if per_minute > 0 else 0), per_hour


def take() -> float:
    """Take a turn for one bulk send on the installation's server: 0 if it may go now, else the
    seconds to wait (nothing taken)."""
    interval, cap = bulk_limits()
    if not interval and not cap:
        return 0.0
    return clients.redis().eval(_TAKE, 3, *_keys(), interval, cap) / 1000


def wait_for_turn(stopping=None) -> float:
    """Block until a bulk send may go; returns the seconds waited. `stopping` (an Event) ends it early."""
    waited = 0.0
    while (delay := take()) > 0:
        pause = min(delay, MAX_WAIT)
        if stopping is not None and stopping.wait(pause):
            raise InterruptedError("stopping while waiting for an SMTP turn")
        if stopping is None:
            time.sleep(pause)
        waited += pause
    return waited


def server_limits(municipality: int, per_minute: float | None, per_hour: int | None) -> None:
    """The rates of municipality `municipality`'s own server (None: the installation's), which `promote`
    paces its newsletters at; the domain writes them when a campaign starts and when they change."""
    interval, cap = bulk_limits(per_minute, per_hour)
    clients.redis().hset(f"{_prefix(municipality)}:limits", mapping={"interval": interval, "cap": cap})


def promote(queue_name: str) -> float | None:
    """Move the jobs of `queue_name` waiting aside whose server's turn has come to the queue; returns 0
    if it moved some, else the seconds until the next turn (None: nothing waits)."""
    interval, cap = bulk_limits()
    connection = clients.redis()
    waited = connection.eval(
        _PROMOTE, 1, rq_compat.RATE_LIMITS_KEY, tenancy.cap_key(queue_name, ""), f"{_prefix()}:m",
        rq_compat.QUEUE_KEY_PREFIX, rq_compat.JOB_KEY_PREFIX, rq_compat.utcformat(rq_compat.now()),
        interval, cap, PROMOTE_AT_ONCE,
    )  # fmt: skip
    return None if waited < 0 else waited / 1000


# KEYS: the job, its queue's intermediate list. ARGV: job id, the score. A job that had its turn (`promote`
# marked it) runs, once: the mark goes. One without (a retry that rq's scheduler put in the queue, a job
# promoted from the dashboard) goes back aside, where its push put it (`jobs.enqueue.unique`, the job's
# `paced_key`), to wait for a turn. Returns 1: it runs; 0: set aside.
_HAD_TURN = (
    rq_compat.JOB_LAYOUT_LUA
    + """
if redis.call('HDEL', KEYS[1], 'turn') == 1 then return 1 end
local key = redis.call('HGET', KEYS[1], 'paced_key')
if not key then return 1 end
redis.call('LREM', KEYS[2], 1, ARGV[1])
hold_back(KEYS[1], ARGV[1], key, ARGV[2])
return 0
"""
)


def had_turn(job_id: str, queue: Queue) -> bool:
    """Whether a job just taken from a paced queue (`promote`) may run: True if it had its turn; else it
    was set aside to wait for one (False), so nothing reaches an own server faster than its pace."""
    keys = (rq_compat.JOB_KEY_PREFIX + job_id, queue.intermediate_queue_key)
    return bool(queue.connection.eval(_HAD_TURN, 2, *keys, job_id, time.time()))


def slow_down(municipality: int | None = None) -> int:
    """The server (the installation's, or `municipality`'s own) asked us to slow down: halve its bulk
    rate for a while; returns the new factor."""
    key = _keys(municipality)[2]
    connection = clients.redis()
    factor = min(int(connection.get(key) or 1) * 2, MAX_SLOWDOWN)
    connection.set(key, factor, ex=SLOWDOWN_SECONDS)
    return factor
