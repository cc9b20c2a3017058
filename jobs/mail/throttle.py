"""The SMTP rate limit for bulk mail, shared by every worker process and host through Redis.

The bulk queue's slots take a turn before they take each job (`wait_for_turn`, `jobs.runtime.slots`), so a
job over the limit waits in its queue (no timeout, no retry) for as long as it takes: a GCRA token bucket
paces them evenly at `SMTP_RATE_PER_MINUTE` × (1 − `SMTP_TRANSACTIONAL_SHARE`) (no bursts), and a
per-hour counter caps them at the same share of `SMTP_RATE_PER_HOUR`. Transactional emails
(verification, welcome…) never wait and never touch Redis for it: the share left to them is theirs.
Exceeding the limit delays a send, it never fails or drops it. The clock is Redis's (`TIME`), so
hosts with drifting clocks agree. A 421/451 ("slow down") from the server halves the bulk rate for
`SLOWDOWN_SECONDS` (`slow_down`); several in a row halve it again, down to 1/16.
"""

import time

from django.conf import settings

from jobs.enqueue import clients

SLOWDOWN_SECONDS = 600
MAX_SLOWDOWN = 16
MAX_WAIT = 5.0  # seconds slept at once between two looks at the bucket

# KEYS: pacing (TAT, ms), the hour's count (a hash: `hour` and `used`), slowdown factor.
# ARGV: interval ms, hour cap. Returns 0 when the send may go now, else the milliseconds to wait.
# The hour is named from Redis's TIME, here, so every host counts in the same one.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1]) * tonumber(redis.call('GET', KEYS[3]) or '1')
local cap = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if interval > 0 and tat > now then return math.ceil(tat - now) end
if cap > 0 then
  local hour = math.floor(now / 3600000)
  local counted = redis.call('HMGET', KEYS[2], 'hour', 'used')
  local used = 0
  if tonumber(counted[1]) == hour then used = tonumber(counted[2]) end
  if used >= cap then return 3600000 - (now % 3600000) end
  redis.call('HSET', KEYS[2], 'hour', hour, 'used', used + 1)
  redis.call('PEXPIRE', KEYS[2], 3600000 - (now % 3600000) + 60000)
end
if interval > 0 then redis.call('SET', KEYS[1], tat + interval, 'PX', math.ceil(tat + interval - now) + 60000) end
return 0
"""


def _keys() -> list[str]:
    prefix = f"{settings.RQ_KEY_PREFIX}:smtp"
    return [f"{prefix}:tat", f"{prefix}:hour", f"{prefix}:slowdown"]


def bulk_limits() -> tuple[float, int]:
    """(milliseconds between two bulk sends, bulk sends per hour); 0 means no limit."""
    share = 1 - settings.SMTP_TRANSACTIONAL_SHARE
    per_minute, per_hour = settings.SMTP_RATE_PER_MINUTE * share, int(settings.SMTP_RATE_PER_HOUR * share)
    return (60_000 / per_minute if per_minute > 0 else 0), per_hour


def take() -> float:
    """Take a turn for one bulk send: 0 if it may go now, else the seconds to wait (nothing taken)."""
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


def slow_down() -> int:
    """The server asked us to slow down: halve the bulk rate for a while; returns the new factor."""
    key = _keys()[2]
    connection = clients.redis()
    factor = min(int(connection.get(key) or 1) * 2, MAX_SLOWDOWN)
    connection.set(key, factor, ex=SLOWDOWN_SECONDS)
    return factor
