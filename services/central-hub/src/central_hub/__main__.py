from aitrading.service import run
from central_hub.main import create_app

if __name__ == "__main__":
    run(create_app())
