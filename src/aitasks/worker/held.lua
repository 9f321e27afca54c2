-- HELD (worker/sweep.py): which of the given jobs have a message somewhere, queued or delivered.
-- KEYS: kombu's unacked hash, then the queue lists
-- ARGV: job ids
-- Returns the ids found. A message names its job as properties.correlation_id (ours, kombu's restores and
-- Celery's retries alike); read here, on the server, so a long queue never crosses the network.
local want = {}
for _, id in ipairs(ARGV) do want[id] = true end
local found = {}
local function look(raw)
  local id = string.match(raw, '"correlation_id":%s*"([^"]+)"')
  if id and want[id] then
    found[#found + 1] = id
    want[id] = nil
  end
end
for _, raw in ipairs(redis.call('HVALS', KEYS[1])) do look(raw) end
for i = 2, #KEYS do
  local n = redis.call('LLEN', KEYS[i])
  for start = 0, n - 1, 500 do
    for _, raw in ipairs(redis.call('LRANGE', KEYS[i], start, start + 499)) do look(raw) end
  end
end
return found
