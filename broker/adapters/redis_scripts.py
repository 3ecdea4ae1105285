"""The Lua scripts of `RedisTokenStore`. Each touches exactly one key, passed as
`KEYS[1]`, so it runs unchanged on Redis Cluster (redis-py routes it by that key's slot)."""

# Compare-and-delete / compare-and-extend: only the owner may release or extend its lock.
RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
EXTEND = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)


# Store unless the generation moved on (or, with only_if_absent, anything is there).
PUT = """
local current = redis.call('get', KEYS[1])
if current then
  if ARGV[4] == '1' then return 0 end
  local ok, doc = pcall(cjson.decode, current)
  if ok and type(doc) == 'table' and tonumber(doc.g) and tonumber(ARGV[1]) < tonumber(doc.g) then
    return 0
  end
end
redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""
# Replace the token by a tombstone one generation up, and tell every replica.
EVICT = """
local current = redis.call('get', KEYS[1])
local generation = 0
if current then
  local ok, doc = pcall(cjson.decode, current)
  if ok and type(doc) == 'table' and tonumber(doc.g) then generation = tonumber(doc.g) end
end
generation = generation + 1
redis.call('set', KEYS[1], cjson.encode({g = generation}), 'PX', ARGV[1])
local message = {realm = ARGV[3], generation = generation, reason = ARGV[4]}
redis.call('publish', ARGV[2], cjson.encode(message))
return generation
"""
# Take the lock; if another owner holds it, make sure it dies within two leases (a lock
# without a TTL, or with an absurd one, was not written by a broker).
ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
local ttl = redis.call('pttl', KEYS[1])
if ttl == -1 or ttl > 2 * tonumber(ARGV[2]) then
  redis.call('pexpire', KEYS[1], 2 * tonumber(ARGV[2]))
end
return 0
"""
# Whether the lock is held, with the same two-lease limit on its life.
HELD = """
local ttl = redis.call('pttl', KEYS[1])
if ttl == -2 then return 0 end
if ttl == -1 or ttl > 2 * tonumber(ARGV[1]) then
  redis.call('pexpire', KEYS[1], 2 * tonumber(ARGV[1]))
end
return 1
"""
