from aitrading.service import run
from api_gateway.main import create_app

if __name__ == "__main__":
    run(create_app())
