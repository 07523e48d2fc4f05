"""Stand-ins for GitHub's and Jira's REST APIs, for the deliver tests.

The receiver (receiver.py) hands them the requests whose path starts with
/github/NAME/ or /jira/NAME/: NAME picks the tracker a test registered.  A
tracker checks each request as the vendor's API description requires it
(method, path, query, headers, and the JSON body against
github-issues.schema.json or jira-issues.schema.json), keeps issues,
comments and transitions as the vendor would, and answers with the
documented status and fields:

  GitHub (REST API 2022-11-28)            Jira (REST API 2)
  POST  .../issues           201 issue    POST .../rest/api/2/issue                  201 {id, key, self}
  GET   .../issues?...       200 [issue]  GET  .../rest/api/2/search/jql?jql=...    200 (Cloud, below)
                                          GET  .../rest/api/2/search?jql=...        200 (Data Center)
  PATCH .../issues/N         200 issue    POST .../rest/api/2/issue/ID/transitions  204
  POST  .../issues/N/comments 201 comment POST .../rest/api/2/issue/ID/comment      201 comment

A Jira stand-in is a Cloud site or a Data Center one (deployment).  Cloud
searches at /search/jql and answers {issues, isLast, nextPageToken} (no
total); it has removed /search, which answers 410 Gone as Atlassian's does.
Data Center searches at /search and answers {startAt, maxResults, total,
issues}; it has no /search/jql (404).

A request that breaks the description is answered 400 (Jira) or 422
(GitHub) and recorded in problems, which the tests require to be empty.

Faults script the next requests of an operation (create, list, update,
comment, transition, search): an answer of a status with headers and a body,
given before or after the operation is carried out (a create that succeeds
and answers 502, or hangs past the worker's timeout, is an answer lost).
"""

import base64
import calendar
import json
import os
import re
import threading
import time
import urllib.parse

import jsonschema

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "github-issues.schema.json")) as f:
    GITHUB_SCHEMA = json.load(f)
with open(os.path.join(HERE, "jira-issues.schema.json")) as f:
    JIRA_SCHEMA = json.load(f)

GITHUB_VERSION = "2022-11-28"
GITHUB_ACCEPT = "application/vnd.github+json"
ISO_Z = "%Y-%m-%dT%H:%M:%SZ"


def _validate(schema, name, body):
    jsonschema.validate(body, {"$ref": "#/$defs/" + name, "$defs": schema["$defs"]})


class Fault:
    """The answer to the next request of op: status, headers, body (an
    object, sent as JSON), before or after the operation is carried out
    (apply), hang seconds first."""

    def __init__(self, op, status, body=None, headers=None, apply=False, hang=0.0):
        self.op = op
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.apply = apply
        self.hang = hang


class Answer:
    def __init__(self, status, body=None, headers=None, hang=0.0):
        self.status = status
        self.body = b"" if body is None else json.dumps(body).encode()
        self.headers = dict(headers or {})
        self.hang = hang


class Tracker:
    kind = None

    def __init__(self, name, secret):
        self.name = name
        self.secret = secret
        self.lock = threading.Lock()
        self.requests = []        # (method, path, query dict, headers dict, body or None)
        self.problems = []        # what broke the API's description
        self.faults = []
        self.issues = {}          # number (GitHub) or id (Jira) -> issue

    def fault(self, *args, **kw):
        with self.lock:
            self.faults.append(Fault(*args, **kw))

    def _take_fault(self, op):
        with self.lock:
            for f in self.faults:
                if f.op == op:
                    self.faults.remove(f)
                    return f
        return None

    def problem(self, what):
        with self.lock:
            self.problems.append(what)

    def count(self, method, pattern):
        return sum(1 for r in self.requests if r[0] == method and re.search(pattern, r[1]))

    def handle(self, method, path, query, headers, raw):
        """path: below /github/NAME or /jira/NAME."""
        hdrs = {k.lower(): v for k, v in headers}
        body = None
        if raw:
            if not hdrs.get("content-type", "").startswith("application/json"):
                self.problem("%s %s: a body without Content-Type: application/json" % (method, path))
            try:
                body = json.loads(raw)
            except ValueError:
                self.problem("%s %s: a body that is not JSON" % (method, path))
                return self.invalid("the body is not JSON")
        with self.lock:
            self.requests.append((method, path, query, hdrs, body))
        if not hdrs.get("user-agent", "").startswith("gate-bridge/"):
            self.problem("%s %s: no User-Agent of gate-bridge" % (method, path))
        auth = self.check_auth(hdrs)
        if auth is not None:
            return auth
        return self.route(method, path, query, hdrs, body)

    def run(self, op, fn):
        """Carry out op (fn returns an Answer), or the fault scripted for it."""
        f = self._take_fault(op)
        if f is None:
            return fn()
        if f.apply:
            fn()
        return Answer(f.status, f.body, f.headers, f.hang)


class GitHub(Tracker):
    kind = "github"

    def __init__(self, name, secret, owner="acme", repo="ops"):
        super().__init__(name, secret)
        self.owner = owner
        self.repo = repo
        self.next_number = 100
        self.comments = []        # (number, body)

    def invalid(self, message, errors=()):
        return Answer(422, {"message": message, "errors": list(errors),
                            "documentation_url": "https://docs.github.com/rest", "status": "422"})

    def check_auth(self, h):
        if h.get("authorization") != "Bearer " + self.secret:
            self.problem("no Authorization: Bearer with the destination's token")
            return Answer(401, {"message": "Bad credentials",
                                "documentation_url": "https://docs.github.com/rest", "status": "401"})
        if h.get("accept") != GITHUB_ACCEPT:
            self.problem("Accept is %r, not %s" % (h.get("accept"), GITHUB_ACCEPT))
        if h.get("x-github-api-version") != GITHUB_VERSION:
            self.problem("X-GitHub-Api-Version is %r" % h.get("x-github-api-version"))
        return None

    def issue_json(self, n):
        i = self.issues[n]
        return {"id": 9000000 + n, "node_id": "I_kw%d" % n, "number": n,
                "url": "https://api.github.com/repos/%s/%s/issues/%d" % (self.owner, self.repo, n),
                "html_url": "https://github.com/%s/%s/issues/%d" % (self.owner, self.repo, n),
                "title": i["title"], "body": i.get("body"), "state": i["state"],
                "state_reason": i.get("state_reason"),
                "labels": [{"name": x if isinstance(x, str) else x.get("name")} for x in i.get("labels", [])],
                "comments": sum(1 for c in self.comments if c[0] == n),
                "created_at": time.strftime(ISO_Z, time.gmtime(i["created"])),
                "updated_at": time.strftime(ISO_Z, time.gmtime(i["updated"])),
                "user": {"login": "gate-bridge-bot"}}

    def route(self, method, path, query, h, body):
        base = "/repos/%s/%s/issues" % (self.owner, self.repo)
        m = re.fullmatch(re.escape(base) + r"(?:/(\d+)(/comments)?)?", path)
        if not m:
            self.problem("%s %s: not an issues endpoint of the repository" % (method, path))
            return Answer(404, {"message": "Not Found", "status": "404"})
        number, comments = (int(m.group(1)) if m.group(1) else None), m.group(2)
        if number is None and method == "POST":
            try:
                _validate(GITHUB_SCHEMA, "create", body)
            except jsonschema.ValidationError as e:
                self.problem("issues/create: %s" % e.message)
                return self.invalid("Validation Failed", [{"resource": "Issue", "code": "invalid",
                                                           "message": e.message}])
            return self.run("create", lambda: self.create(body))
        if number is None and method == "GET":
            return self.run("list", lambda: self.list(query))
        if number is not None and number not in self.issues:
            return Answer(404, {"message": "Not Found", "status": "404"})
        if comments and method == "POST":
            try:
                _validate(GITHUB_SCHEMA, "comment", body)
            except jsonschema.ValidationError as e:
                self.problem("issues/create-comment: %s" % e.message)
                return self.invalid("Validation Failed")
            return self.run("comment", lambda: self.comment(number, body))
        if not comments and method == "PATCH":
            try:
                _validate(GITHUB_SCHEMA, "update", body)
            except jsonschema.ValidationError as e:
                self.problem("issues/update: %s" % e.message)
                return self.invalid("Validation Failed")
            return self.run("update", lambda: self.update(number, body))
        self.problem("%s %s: not an operation of the issues API" % (method, path))
        return Answer(404, {"message": "Not Found", "status": "404"})

    def create(self, body):
        with self.lock:
            n = self.next_number
            self.next_number += 1
            now = time.time()
            self.issues[n] = dict(body, state="open", created=now, updated=now)
        return Answer(201, self.issue_json(n), {
            "Location": "https://api.github.com/repos/%s/%s/issues/%d" % (self.owner, self.repo, n)})

    def list(self, q):
        allowed = {"milestone", "state", "assignee", "type", "creator", "mentioned", "labels",
                   "sort", "direction", "since", "per_page", "page"}
        for k in q:
            if k not in allowed:
                self.problem("issues/list-for-repo: no query parameter %r" % k)
        if q.get("state", "open") not in ("open", "closed", "all"):
            self.problem("issues/list-for-repo: state %r" % q.get("state"))
        if q.get("sort", "created") not in ("created", "updated", "comments"):
            self.problem("issues/list-for-repo: sort %r" % q.get("sort"))
        if q.get("direction", "desc") not in ("asc", "desc"):
            self.problem("issues/list-for-repo: direction %r" % q.get("direction"))
        since = 0.0
        if "since" in q:
            try:
                since = calendar.timegm(time.strptime(q["since"], ISO_Z))
            except ValueError:
                self.problem("issues/list-for-repo: since %r is not an ISO 8601 time" % q["since"])
        per_page = int(q.get("per_page", "30"))
        if not 1 <= per_page <= 100:
            self.problem("issues/list-for-repo: per_page %d" % per_page)
        with self.lock:
            nums = [n for n, i in self.issues.items()
                    if i["updated"] >= since and (q.get("state", "open") == "all"
                                                  or i["state"] == q.get("state", "open"))]
            nums.sort(reverse=q.get("direction", "desc") == "desc")
            items = [self.issue_json(n) for n in nums[:per_page]]
        # a pull request is an issue to this endpoint
        items.insert(0, {"id": 1, "number": 1, "html_url": "https://github.com/acme/ops/pull/1",
                         "title": "a pull request", "body": "", "state": "open",
                         "pull_request": {"url": "https://api.github.com/repos/acme/ops/pulls/1"}})
        return Answer(200, items)

    def update(self, n, body):
        with self.lock:
            self.issues[n].update({k: v for k, v in body.items()})
            self.issues[n]["updated"] = time.time()
        return Answer(200, self.issue_json(n))

    def comment(self, n, body):
        with self.lock:
            self.comments.append((n, body["body"]))
            self.issues[n]["updated"] = time.time()
            cid = len(self.comments)
        return Answer(201, {"id": cid, "body": body["body"],
                            "html_url": "https://github.com/acme/ops/issues/%d#issuecomment-%d" % (n, cid),
                            "user": {"login": "gate-bridge-bot"}})


class Jira(Tracker):
    kind = "jira"
    TRANSITIONS = {"11": "To Do", "21": "In Progress", "31": "Done"}

    # the query parameters of each search, as the vendor documents them
    CLOUD_SEARCH = {"jql", "nextPageToken", "maxResults", "fields", "expand", "properties",
                    "fieldsByKeys", "failFast", "reconcileIssues"}
    DC_SEARCH = {"jql", "startAt", "maxResults", "validateQuery", "fields", "expand",
                 "properties", "fieldsByKeys"}

    def __init__(self, name, secret, project="OPS", base="", deployment="data_center"):
        super().__init__(name, secret)
        assert deployment in ("cloud", "data_center"), deployment
        self.deployment = deployment
        self.project = project
        self.base = base          # what self links begin with
        self.next_id = 10000
        self.comments = []        # (id, body)
        self.transitions = []     # (id, transition id)

    def invalid(self, message, errors=None):
        return Answer(400, {"errorMessages": [message] if message else [], "errors": errors or {}})

    def check_auth(self, h):
        auth = h.get("authorization", "")
        if ":" in self.secret:
            want = "Basic " + base64.b64encode(self.secret.encode()).decode()
        else:
            want = "Bearer " + self.secret
        if auth != want:
            self.problem("Authorization is not %s with the destination's secret" % want.split()[0])
            return Answer(401, {"errorMessages": ["You are not authenticated."], "errors": {}})
        if "application/json" not in h.get("accept", ""):
            self.problem("Accept is %r" % h.get("accept"))
        return None

    def route(self, method, path, query, h, body):
        if method == "POST" and path == "/rest/api/2/issue":
            try:
                _validate(JIRA_SCHEMA, "create", body)
            except jsonschema.ValidationError as e:
                self.problem("createIssue: %s" % e.message)
                return self.invalid(None, {"fields": e.message})
            if body["fields"]["project"].get("key") != self.project:
                return self.invalid(None, {"project": "valid project is required"})
            return self.run("create", lambda: self.create(body))
        if method == "GET" and path in ("/rest/api/2/search", "/rest/api/2/search/jql"):
            cloud = self.deployment == "cloud"
            if path.endswith("/jql") != cloud:
                self.problem("GET %s: not a search of Jira %s" % (path, "Cloud" if cloud else "Data Center"))
                if cloud:
                    return Answer(410, {"errorMessages": [
                        "The requested API has been removed. Please migrate to the /rest/api/3/search/jql API. "
                        "A full migration guideline is available at "
                        "https://developer.atlassian.com/changelog/#CHANGE-2046"], "errors": {}})
                return Answer(404, {"errorMessages": ["null for uri: %s" % path], "errors": {}})
            return self.run("search", lambda: self.search(query))
        m = re.fullmatch(r"/rest/api/2/issue/([A-Z0-9_-]+)/(transitions|comment)", path)
        if m and method == "POST":
            iid = m.group(1)
            if iid not in self.issues:
                return Answer(404, {"errorMessages": ["Issue does not exist or you do not have permission to see it."],
                                    "errors": {}})
            if m.group(2) == "transitions":
                try:
                    _validate(JIRA_SCHEMA, "transition", body)
                except jsonschema.ValidationError as e:
                    self.problem("doTransition: %s" % e.message)
                    return self.invalid(e.message)
                if body["transition"]["id"] not in self.TRANSITIONS:
                    return self.invalid("Transition id '%s' is not valid for this issue." % body["transition"]["id"])
                return self.run("transition", lambda: self.transition(iid, body["transition"]["id"]))
            try:
                _validate(JIRA_SCHEMA, "comment", body)
            except jsonschema.ValidationError as e:
                self.problem("addComment: %s" % e.message)
                return self.invalid(e.message)
            return self.run("comment", lambda: self.comment(iid, body["body"]))
        self.problem("%s %s: not an operation of the issue API" % (method, path))
        return Answer(404, {"errorMessages": ["null for uri: %s" % path], "errors": {}})

    def create(self, body):
        with self.lock:
            iid = str(self.next_id)
            self.next_id += 1
            key = "%s-%d" % (self.project, len(self.issues) + 1)
            self.issues[iid] = dict(body["fields"], key=key, status="To Do", created=time.time())
        return Answer(201, {"id": iid, "key": key, "self": "%s/rest/api/2/issue/%s" % (self.base, iid)})

    def search(self, q):
        cloud = self.deployment == "cloud"
        for k in q:
            if k not in (self.CLOUD_SEARCH if cloud else self.DC_SEARCH):
                self.problem("search: no query parameter %r" % k)
        jql = q.get("jql", "")
        if not jql.strip():
            self.problem("search: no jql")
            return self.invalid("JQL query is required")
        if 'project = "%s"' % self.project not in jql:
            self.problem("search: the jql %r does not name the project" % jql)
        if "maxResults" in q and not q["maxResults"].isdigit():
            self.problem("search: maxResults %r" % q["maxResults"])
        fields = q.get("fields", "").split(",")
        limit = int(q["maxResults"]) if q.get("maxResults", "").isdigit() else 50
        with self.lock:
            found = [{"id": iid, "key": i["key"], "self": "%s/rest/api/2/issue/%s" % (self.base, iid),
                      "fields": {f: i.get(f) for f in fields if f}}
                     for iid, i in sorted(self.issues.items(), reverse=True)
                     if "gate-bridge" in i.get("labels", []) or "labels" not in jql]
        if cloud:
            answer = {"issues": found[:limit], "isLast": len(found) <= limit}
            if len(found) > limit:
                answer["nextPageToken"] = "page-2"
            return Answer(200, answer)
        return Answer(200, {"expand": "schema,names", "startAt": 0, "maxResults": limit,
                            "total": len(found), "issues": found[:limit]})

    def transition(self, iid, tid):
        with self.lock:
            self.transitions.append((iid, tid))
            self.issues[iid]["status"] = self.TRANSITIONS[tid]
        return Answer(204)

    def comment(self, iid, text):
        with self.lock:
            self.comments.append((iid, text))
            cid = str(20000 + len(self.comments))
        return Answer(201, {"id": cid, "body": text, "self": "%s/rest/api/2/issue/%s/comment/%s"
                            % (self.base, iid, cid)})


def parse_query(q):
    return dict(urllib.parse.parse_qsl(q, keep_blank_values=True))
