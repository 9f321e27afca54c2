"""The shortest real path: submit a diagnostic job over HTTP and get its result from a real worker."""

from stack import submit, wait_status


def test_diagnostic_job_runs_on_a_real_worker(client):
    task_id = submit(client, parameters={"steps": 2, "duration_s": 0.2})
    status = wait_status(client, task_id)
    assert status["status"] == "SUCCESS", status
    r = client.get(f"/api/v1/tasks/{task_id}/result/")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "SUCCESS"
    assert body["result"]["parameters"]["steps"] == 2
    assert body["result"]["attempts"] == 1
