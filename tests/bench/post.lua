-- wrk script: POST /v1/signups with a JSON body (the same signup for every request).
wrk.method = "POST"
wrk.path = "/v1/signups"
wrk.body = '{"email": "ada@example.com", "name": "Ada Lovelace", "locale": "en"}'
wrk.headers["Content-Type"] = "application/json"
