-- history (aitasks.store, docs/history.md): hand the ended job to the store of record in the same atomic
-- step as its end. The entry is the whole record (and, for a document's job, the document's record), so the
-- recorder needs nothing that may have expired meanwhile. The recorder deletes an entry once it is in SQL;
-- the cap bounds Redis memory while SQL is down for long (the oldest unrecorded entries go first).
-- Uses: KEYS[1] (the job), x.document. Writes: the history stream.
local entry = redis.call('HGETALL', KEYS[1])
if x['document'] then
  local doc = redis.call('HGETALL', x['document'])
  if #doc > 0 then
    entry[#entry + 1] = '__document'
    entry[#entry + 1] = cjson.encode(doc)
  end
end
redis.call('XADD', '@HISTORY_STREAM@', 'MAXLEN', '~', '@HISTORY_STREAM_MAX@', '*', unpack(entry))
