from aitrading.service import run
from user_service.main import create_app

if __name__ == "__main__":
    run(create_app())
