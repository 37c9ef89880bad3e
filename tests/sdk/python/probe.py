"""Runs one official Python SDK's default credential chain with the environment it is given and
prints one line: "ok <detail>" with credentials, or "error <message>" without."""
import sys


def aws():
    import boto3

    credentials = boto3.Session().get_credentials()
    if credentials is None:
        raise RuntimeError("the default chain found no credentials")
    frozen = credentials.get_frozen_credentials()
    return f"access_key={frozen.access_key} source={credentials.method}"


def azure():
    from azure.identity import DefaultAzureCredential

    token = DefaultAzureCredential().get_token("https://management.azure.com/.default")
    return "token=" + token.token


def google():
    import google.auth
    import google.auth.transport.requests

    # With scopes, default() also looks the project id up (Cloud Resource Manager) with the token.
    credentials, project = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    credentials.refresh(google.auth.transport.requests.Request())
    return f"token={credentials.token} project={project}"


def main():
    try:
        detail = {"aws": aws, "azure": azure, "google": google}[sys.argv[1]]()
    except Exception as err:  # every failure is one "error" line for the test to read
        print("error " + " ".join(f"{type(err).__name__}: {err}".split()))
        sys.exit(1)
    print("ok " + detail)


main()
